//! The REST API end to end: Basic Auth on every route, blocking and unblocking real traffic,
//! checks with an encoded `/`, all-or-nothing validation.
//!
//! Needs root, `ip`, `iptables`/`ip6tables` and `ping`; skips otherwise (fails instead with
//! MEDS_E2E_REQUIRE=1).

use std::net::IpAddr;

use anyhow::{Context, Result, ensure};
use meds_e2e::Bed;
use meds_e2e::bed::Auth;
use meds_e2e::medsctl::{List, field_bool, field_u64};
use meds_e2e::topology::{PEER4, PEER4_ALT, PEER6};
use serde_json::Value;

/// `GET /v1/{list}/subnets` → the entries.
fn subnets(bed: &Bed, list: &str) -> Result<Vec<String>> {
    let r = bed.http("GET", &format!("/v1/{list}/subnets"), None, Auth::Valid)?;
    ensure!(r.status == 200, "GET {list}: {} {}", r.status, r.body);
    let v = r.json()?;
    v["subnets"]
        .as_array()
        .with_context(|| format!("no subnets array: {v}"))?
        .iter()
        .map(|s| {
            s.as_str()
                .map(str::to_owned)
                .context("subnet is not a string")
        })
        .collect()
}

/// `GET /v1/blacklist/subnets/{query}` → (found, matches).
fn check(bed: &Bed, query: &str) -> Result<(bool, Vec<Value>)> {
    let r = bed.http(
        "GET",
        &format!("/v1/blacklist/subnets/{query}"),
        None,
        Auth::Valid,
    )?;
    ensure!(r.status == 200, "check {query}: {} {}", r.status, r.body);
    let v = r.json()?;
    let matches = v["matches"].as_array().cloned().unwrap_or_default();
    Ok((field_bool(&v, "found")?, matches))
}

#[test]
fn rest_api_with_basic_auth_drives_the_dataplane() -> Result<()> {
    Bed::run("rest", |bed| {
        let (p4, p6): (IpAddr, IpAddr) = (PEER4.into(), PEER6.into());
        bed.expect_open(p4)?;
        bed.expect_open(p6)?;

        // 401 without or with wrong credentials, on known and unknown routes alike.
        let cases = [
            ("GET", "/v1/blacklist/subnets", Auth::Missing),
            ("GET", "/v1/blacklist/subnets", Auth::WrongPassword),
            ("POST", "/v1/blacklist/subnets", Auth::Missing),
            ("GET", "/no/such/route", Auth::Missing),
        ];
        for (method, path, auth) in cases {
            let body = (method == "POST").then_some(r#"{"subnets":["203.0.113.2/32"]}"#);
            let r = bed.http(method, path, body, auth)?;
            ensure!(
                r.status == 401,
                "{method} {path} {auth:?}: {} {}",
                r.status,
                r.body
            );
            let challenge = r.header("www-authenticate").unwrap_or_default();
            ensure!(
                challenge.starts_with("Basic"),
                "{method} {path}: WWW-Authenticate {challenge:?}"
            );
        }
        ensure!(
            subnets(bed, "blacklist")?.is_empty(),
            "the unauthenticated POST changed the blacklist"
        );
        ensure!(
            subnets(bed, "whitelist")?.iter().any(|s| s == "10.0.0.0/8"),
            "default whitelist missing from GET /v1/whitelist/subnets"
        );

        // Block through REST: 202, both entries applied, real traffic stops.
        let body = r#"{"subnets":["203.0.113.2/32","2001:db8:1::2/128"]}"#;
        let r = bed.http("POST", "/v1/blacklist/subnets", Some(body), Auth::Valid)?;
        ensure!(r.status == 202, "POST: {} {}", r.status, r.body);
        let v = r.json()?;
        ensure!(
            field_u64(&v, "changed")? == 2 && field_bool(&v, "applied")?,
            "POST answer {v}"
        );
        bed.expect_blocked(p4)?;
        bed.expect_blocked(p6)?;
        ensure!(
            bed.reach(PEER4_ALT.into())?.all(),
            "203.0.113.3 must stay reachable"
        );

        // Checks: a bare address, a prefix with an encoded slash, a prefix it does not cover.
        let cases: [(&str, bool); 6] = [
            ("203.0.113.2", true),
            ("203.0.113.2%2F32", true),
            ("203.0.113.0%2F24", false),
            ("203.0.113.3", false),
            ("2001:db8:1::2%2F128", true),
            ("2001:db8:1::%2F64", false),
        ];
        for (query, want) in cases {
            let (found, matches) = check(bed, query)?;
            ensure!(
                found == want,
                "check {query}: found={found} matches={matches:?}"
            );
        }
        let (_, matches) = check(bed, "203.0.113.2%2F32")?;
        ensure!(
            matches == [Value::from("203.0.113.2/32")],
            "matches {matches:?}"
        );
        let r = bed.http("GET", "/v1/blacklist/subnets/not-an-ip", None, Auth::Valid)?;
        ensure!(r.status == 400, "check not-an-ip: {} {}", r.status, r.body);

        // A bad entry: 400 naming it, and nothing changes (the good entry before it included).
        let before = (subnets(bed, "blacklist")?, subnets(bed, "whitelist")?);
        let ctl_before = bed.ctl.list(List::Blacklist)?;
        let bad = r#"{"subnets":["203.0.113.9/32","203.0.113.300/32"]}"#;
        for list in ["blacklist", "whitelist"] {
            for method in ["POST", "DELETE"] {
                let r = bed.http(
                    method,
                    &format!("/v1/{list}/subnets"),
                    Some(bad),
                    Auth::Valid,
                )?;
                ensure!(
                    r.status == 400,
                    "{method} {list} with a bad CIDR: {} {}",
                    r.status,
                    r.body
                );
                ensure!(
                    r.body.contains("203.0.113.300"),
                    "the error must name the bad entry: {}",
                    r.body
                );
            }
        }
        let after = (subnets(bed, "blacklist")?, subnets(bed, "whitelist")?);
        ensure!(
            before == after,
            "lists changed by a rejected request: {before:?} -> {after:?}"
        );
        ensure!(
            bed.ctl.list(List::Blacklist)? == ctl_before,
            "medsctl sees a changed blacklist"
        );

        // Unblock through REST.
        let r = bed.http("DELETE", "/v1/blacklist/subnets", Some(body), Auth::Valid)?;
        ensure!(r.status == 202, "DELETE: {} {}", r.status, r.body);
        let v = r.json()?;
        ensure!(
            field_u64(&v, "changed")? == 2 && field_bool(&v, "applied")?,
            "DELETE answer {v}"
        );
        bed.expect_open(p4)?;
        bed.expect_open(p6)?;
        ensure!(
            subnets(bed, "blacklist")?.is_empty(),
            "blacklist not empty after DELETE"
        );
        Ok(())
    })
}
