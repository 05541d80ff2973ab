//! `GET /v1/check/{ip}`: everything the controller knows about one address, as the
//! [`IpReport`] JSON: which prefix lists and feeds contain it (with the most specific entry of
//! each), its ASN, country and IP-to-ASN network, whether the country is blocked and which ASN
//! lists contain the ASN. Decode, call the [`Controller`](crate::core::Controller), encode.
//!
//! ```json
//! {"ip":"203.0.113.7","lists":{"blacklist":"203.0.113.7/32","firehol":"203.0.113.0/24"},
//!  "asn":64496,"country":"fr","network":"203.0.113.0/24","country_blocked":true,
//!  "asn_lists":["asns"]}
//! ```
//! `asn`, `country` and `network` are `null` when the IP-to-ASN table has no row for the
//! address.

use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use meds_proto::Cidr;

use super::ApiState;
use super::error::ApiError;
use crate::core::IpReport;

pub(crate) async fn check(
    state: Arc<ApiState>,
    ip: Result<Path<String>, PathRejection>,
) -> Result<Json<IpReport>, ApiError> {
    let Path(text) = ip?;
    let ip = parse_address(&text).map_err(ApiError::BadRequest)?;
    Ok(Json(state.controller.ip_report(ip)))
}

/// One address, with the same rules as a list entry (no IPv4-mapped IPv6, no zone id), but
/// not a prefix.
fn parse_address(text: &str) -> Result<std::net::IpAddr, String> {
    if text.contains('/') {
        let shown: String = text.chars().take(64).collect();
        return Err(format!(
            "ip: {shown:?} is a prefix: check one address, e.g. 203.0.113.7"
        ));
    }
    Cidr::from_str(text)
        .map(|c| c.addr())
        .map_err(|e| format!("ip: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_only() {
        for (text, want) in [
            ("203.0.113.7", "203.0.113.7"),
            (" 203.0.113.7 ", "203.0.113.7"),
            ("2001:DB8::1", "2001:db8::1"),
            ("0.0.0.0", "0.0.0.0"),
            ("::", "::"),
        ] {
            assert_eq!(parse_address(text).unwrap().to_string(), want, "{text}");
        }
        for (text, want) in [
            ("203.0.113.0/24", "is a prefix"),
            ("2001:db8::/32", "is a prefix"),
            ("300.1.1.1", "not a valid"),
            ("::ffff:192.0.2.1", "IPv4-mapped"),
            ("", "empty value"),
            ("fe80::1%eth0", "not a valid"),
        ] {
            let err = parse_address(text).unwrap_err();
            assert!(err.starts_with("ip: "), "{text}: {err}");
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
