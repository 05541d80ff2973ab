//! `GET /v1/explain/{ip}?port=&sni=&dns=&ja3=&ja4=`: how the dataplane's live chain decides a
//! packet from `ip` (to `port`, carrying the SNI, DNS names and fingerprints given). `dns` may
//! be repeated and/or comma-separated. Decode, ask the [`Explainer`](crate::explain::Explainer),
//! encode:
//!
//! ```json
//! {"ip":"203.0.113.7","generation":42,
//!  "steps":[{"filter":"ip","list":"whitelist","outcome":"no_match","detail":"","verdict":"","reason":""},
//!           {"filter":"ip","list":"blacklist","outcome":"match","detail":"203.0.113.0/24",
//!            "verdict":"drop","reason":"BlackList"}, …],
//!  "verdict":"drop","filter":"ip","reason":"BlackList","offload":"blocked (offloaded to the kernel)"}
//! ```
//! `outcome` is one of `match`, `no_match`, `not_reached`, `skipped` (`unspecified` only from
//! a dataplane that did not say). Errors: 400 naming the parameter (`port: 70000 is not a
//! port (0..=65535)`, an unknown parameter), 503 without a connected enforcing dataplane, 504
//! when it does not answer within 2 s, 500 with the dataplane's text when it refused the
//! request.

use std::sync::Arc;

use axum::Json;
use axum::extract::Path;
use axum::extract::Query as QueryParams;
use axum::extract::rejection::{PathRejection, QueryRejection};
use meds_proto::pb;
use serde_json::Value;

use super::ApiState;
use super::error::ApiError;
use crate::explain::Query;

pub(crate) async fn explain(
    state: Arc<ApiState>,
    ip: Result<Path<String>, PathRejection>,
    params: Result<QueryParams<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(ip) = ip?;
    let QueryParams(params) =
        params.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    let wire = query_from_params(ip, &params)?;
    let query = Query::parse(&wire)?;
    let response = state.controller.explain(&query).await?;
    Ok(Json(meds_proto::view::explain_json(
        &query.ip.to_string(),
        &response,
    )))
}

/// The typed query from the path and the URL parameters (values still as typed).
fn query_from_params(
    ip: String,
    params: &[(String, String)],
) -> Result<pb::ExplainQuery, ApiError> {
    let mut q = pb::ExplainQuery {
        ip,
        ..pb::ExplainQuery::default()
    };
    for (key, value) in params {
        match key.as_str() {
            "port" if value.trim().is_empty() => q.port = 0,
            "port" => {
                q.port = value.trim().parse::<u32>().map_err(|_| {
                    let shown: String = value.chars().take(32).collect();
                    ApiError::BadRequest(format!("port: {shown:?} is not a port (0..=65535)"))
                })?;
            }
            "sni" => q.sni.clone_from(value),
            "dns" => q.dns.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(str::to_owned),
            ),
            "ja3" => q.ja3.clone_from(value),
            "ja4" => q.ja4.clone_from(value),
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter {shown:?} (port, sni, dns, ja3, ja4)"
                )));
            }
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn dns_repeated_and_comma_separated() {
        let q = query_from_params(
            "203.0.113.7".into(),
            &params(&[
                ("dns", "a.example,b.example"),
                ("dns", "c.example"),
                ("port", ""),
            ]),
        )
        .unwrap();
        assert_eq!(q.dns, ["a.example", "b.example", "c.example"]);
        assert_eq!(q.port, 0);
    }

    #[test]
    fn bad_parameters_are_named() {
        for (pairs, want) in [
            (vec![("port", "x")], "port: "),
            (vec![("prot", "1")], "unknown parameter \"prot\""),
        ] {
            let err = query_from_params("203.0.113.7".into(), &params(&pairs)).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
        }
    }
}
