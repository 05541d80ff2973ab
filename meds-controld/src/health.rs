//! What needs an operator's attention, in one place: `medsctl status` and REST `/v1/status`
//! show these problems (and "ok" when there are none).
//!
//! Only conditions an operator has to act on count: no enforcing dataplane connected, a
//! dataplane that has not applied the stored policy, an enabled feed whose last attempt
//! failed (its last good copy stays in force). Must not: read anything but the status it is
//! given, or flag what is normal (a disabled feed, a feed not fetched yet at start).

use crate::core::Status;
use crate::feeds::FeedStatus;

/// The problems, worst first; empty when all is well.
pub fn problems(status: &Status, feeds: &[FeedStatus]) -> Vec<String> {
    let mut problems = Vec::new();
    if !status.dataplane_connected {
        problems.push("no dataplane connected".to_string());
    } else if status.applied_generation < status.generation {
        problems.push(format!(
            "dataplane applied generation {} of {}",
            status.applied_generation, status.generation
        ));
    }
    for feed in feeds
        .iter()
        .filter(|f| f.enabled && !f.last_error.is_empty())
    {
        problems.push(format!("feed {} failing: {}", feed.name, feed.last_error));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Controller;

    fn feed(name: &str, enabled: bool, last_error: &str) -> FeedStatus {
        FeedStatus {
            name: name.into(),
            list: "firehol".into(),
            enabled,
            url: "https://feeds.example/x".into(),
            entries: 10,
            last_success_unix: 1,
            last_attempt_unix: 2,
            next_update_unix: 3,
            last_error: last_error.into(),
            failures: u64::from(!last_error.is_empty()),
            rejected_lines: 0,
        }
    }

    #[test]
    fn each_problem_is_named_and_a_healthy_controller_has_none() {
        let ctl = Controller::new_for_tests();
        let mut status = ctl.status();
        assert_eq!(problems(&status, &[]), ["no dataplane connected"]);

        status.dataplane_connected = true;
        status.applied_generation = status.generation;
        assert!(problems(&status, &[feed("a", true, "")]).is_empty());
        // A failing feed that is disabled is not a problem.
        assert!(problems(&status, &[feed("b", false, "HTTP 503")]).is_empty());

        status.generation += 2;
        let feeds = [feed("a", true, ""), feed("feodo", true, "HTTP 503")];
        assert_eq!(
            problems(&status, &feeds),
            [
                format!(
                    "dataplane applied generation {} of {}",
                    status.applied_generation, status.generation
                ),
                "feed feodo failing: HTTP 503".to_string(),
            ]
        );
    }
}
