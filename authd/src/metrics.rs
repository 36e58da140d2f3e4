//! Prometheus metrics (DESIGN §13), kept in atomics: counting costs the hot path one
//! relaxed increment, and rendering happens only when scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Forward-auth decisions.
#[derive(Debug, Clone, Copy)]
pub enum Decision {
    Allowed,
    Redirect,
    Unauthorized,
    Forbidden,
    BadRequest,
}

const DECISIONS: [(Decision, &str); 5] = [
    (Decision::Allowed, "allowed"),
    (Decision::Redirect, "redirect"),
    (Decision::Unauthorized, "unauthorized"),
    (Decision::Forbidden, "forbidden"),
    (Decision::BadRequest, "bad_request"),
];

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    decisions: [AtomicU64; 5],
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    logins_success: AtomicU64,
    logins_failure: AtomicU64,
    logins_busy: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl Metrics {
    pub fn decision(&self, d: Decision, took: Duration) {
        self.decisions[d as usize].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn login(&self, ok: bool) {
        let c = if ok {
            &self.logins_success
        } else {
            &self.logins_failure
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn login_busy(&self) {
        self.logins_busy.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reload(&self, ok: bool) {
        let c = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition format.
    pub fn render(&self, live_sessions: usize) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP halos_authd_authz_decisions_total Forward-auth decisions by result."
        );
        let _ = writeln!(o, "# TYPE halos_authd_authz_decisions_total counter");
        for (d, name) in DECISIONS {
            let _ = writeln!(
                o,
                "halos_authd_authz_decisions_total{{result=\"{name}\"}} {}",
                get(&self.decisions[d as usize])
            );
        }
        let _ = writeln!(
            o,
            "# HELP halos_authd_authz_duration_seconds Forward-auth request latency."
        );
        let _ = writeln!(o, "# TYPE halos_authd_authz_duration_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "halos_authd_authz_duration_seconds_bucket{{le=\"{b}\"}} {}",
                get(&self.latency_buckets[i])
            );
        }
        let count = get(&self.latency_count);
        let _ = writeln!(
            o,
            "halos_authd_authz_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            o,
            "halos_authd_authz_duration_seconds_sum {}",
            get(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(o, "halos_authd_authz_duration_seconds_count {count}");
        let _ = writeln!(
            o,
            "# HELP halos_authd_logins_total Password logins by result."
        );
        let _ = writeln!(o, "# TYPE halos_authd_logins_total counter");
        let _ = writeln!(
            o,
            "halos_authd_logins_total{{factor=\"password\",result=\"success\"}} {}",
            get(&self.logins_success)
        );
        let _ = writeln!(
            o,
            "halos_authd_logins_total{{factor=\"password\",result=\"failure\"}} {}",
            get(&self.logins_failure)
        );
        let _ = writeln!(
            o,
            "halos_authd_logins_total{{factor=\"password\",result=\"busy\"}} {}",
            get(&self.logins_busy)
        );
        let _ = writeln!(
            o,
            "# HELP halos_authd_reloads_total Reloads (users, clients, configuration) by result."
        );
        let _ = writeln!(o, "# TYPE halos_authd_reloads_total counter");
        let _ = writeln!(
            o,
            "halos_authd_reloads_total{{result=\"ok\"}} {}",
            get(&self.reloads_ok)
        );
        let _ = writeln!(
            o,
            "halos_authd_reloads_total{{result=\"failed\"}} {}",
            get(&self.reloads_failed)
        );
        let _ = writeln!(o, "# HELP halos_authd_sessions Live sessions.");
        let _ = writeln!(o, "# TYPE halos_authd_sessions gauge");
        let _ = writeln!(o, "halos_authd_sessions {live_sessions}");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.decision(Decision::Allowed, Duration::from_micros(300));
        m.decision(Decision::Redirect, Duration::from_millis(2));
        m.login(true);
        m.login(false);
        m.reload(false);
        let t = m.render(3);
        assert!(t.contains("halos_authd_authz_decisions_total{result=\"allowed\"} 1"));
        assert!(t.contains("halos_authd_authz_decisions_total{result=\"redirect\"} 1"));
        assert!(t.contains("halos_authd_authz_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(t.contains("halos_authd_authz_duration_seconds_bucket{le=\"0.0025\"} 2"));
        assert!(t.contains("halos_authd_authz_duration_seconds_count 2"));
        assert!(
            t.contains("result=\"failure\"} 1")
                && t.contains("halos_authd_reloads_total{result=\"failed\"} 1")
        );
        assert!(t.contains("halos_authd_sessions 3"));
    }
}
