//! The per-node health state machine (lua-resty-healthcheck's counters), pure and
//! synchronous: the registry feeds it observations from probes and proxied attempts.

use serde::Serialize;

/// One classified probe result or proxied attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    Success,
    HttpFailure,
    TcpFailure,
    Timeout,
}

impl Observation {
    /// `success`, `http_failure`, `tcp_failure`, `timeout` (the counter names).
    pub fn as_str(self) -> &'static str {
        match self {
            Observation::Success => "success",
            Observation::HttpFailure => "http_failure",
            Observation::TcpFailure => "tcp_failure",
            Observation::Timeout => "timeout",
        }
    }
}

impl std::fmt::Display for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The four counters, named as in APISIX's control API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub success: u32,
    pub http_failure: u32,
    pub tcp_failure: u32,
    pub timeout_failure: u32,
}

/// How many consecutive observations of a kind flip the node; 0 disables that kind (its
/// observations are ignored entirely, as lua-resty-healthcheck does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub successes: u32,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

/// A node's health and counters. Starts healthy with zero counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    pub healthy: bool,
    pub counters: Counters,
}

impl Default for NodeState {
    fn default() -> Self {
        NodeState {
            healthy: true,
            counters: Counters::default(),
        }
    }
}

/// A health flip caused by one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    ToHealthy,
    ToUnhealthy,
}

impl NodeState {
    pub fn new() -> NodeState {
        NodeState::default()
    }

    /// Applies one observation:
    /// - a kind whose threshold is 0 is ignored (no counter changes);
    /// - a success increments `success` and clears the failure counters; any failure clears
    ///   `success` and increments its own counter (all saturating);
    /// - while healthy, a failure counter reaching its threshold flips to unhealthy; while
    ///   unhealthy, `success` reaching `successes` flips to healthy; a flip resets all
    ///   counters.
    pub fn observe(&mut self, obs: Observation, t: &Thresholds) -> Option<Transition> {
        self.step(obs, t).map(|(tr, _)| tr)
    }

    /// [`NodeState::observe`], also returning the counters that caused a transition (as
    /// they were just before the reset), for logs.
    pub fn step(&mut self, obs: Observation, t: &Thresholds) -> Option<(Transition, Counters)> {
        let c = &mut self.counters;
        let (counter, limit) = match obs {
            Observation::Success => (&mut c.success, t.successes),
            Observation::HttpFailure => (&mut c.http_failure, t.http_failures),
            Observation::TcpFailure => (&mut c.tcp_failure, t.tcp_failures),
            Observation::Timeout => (&mut c.timeout_failure, t.timeouts),
        };
        if limit == 0 {
            return None;
        }
        *counter = counter.saturating_add(1);
        let reached = *counter >= limit;
        if obs == Observation::Success {
            c.http_failure = 0;
            c.tcp_failure = 0;
            c.timeout_failure = 0;
        } else {
            c.success = 0;
        }
        let flip = match (self.healthy, obs == Observation::Success) {
            (false, true) if reached => Some(Transition::ToHealthy),
            (true, false) if reached => Some(Transition::ToUnhealthy),
            _ => None,
        };
        let tr = flip?;
        let reached = self.counters;
        self.healthy = tr == Transition::ToHealthy;
        self.counters = Counters::default();
        Some((tr, reached))
    }
}

#[cfg(test)]
mod tests {
    use super::Observation::{HttpFailure as H, Success as S, TcpFailure as T, Timeout as O};
    use super::Transition::{ToHealthy as UP, ToUnhealthy as DOWN};
    use super::*;

    const DEFAULT_ACTIVE: Thresholds = Thresholds {
        successes: 2,
        http_failures: 5,
        tcp_failures: 2,
        timeouts: 3,
    };

    fn th(successes: u32, http_failures: u32, tcp_failures: u32, timeouts: u32) -> Thresholds {
        Thresholds {
            successes,
            http_failures,
            tcp_failures,
            timeouts,
        }
    }

    fn ctr(success: u32, http_failure: u32, tcp_failure: u32, timeout_failure: u32) -> Counters {
        Counters {
            success,
            http_failure,
            tcp_failure,
            timeout_failure,
        }
    }

    struct Case {
        name: &'static str,
        start_healthy: bool,
        t: Thresholds,
        seq: &'static [Observation],
        /// Index in `seq` and transition, for every transition expected.
        flips: &'static [(usize, Transition)],
        healthy: bool,
        counters: Counters,
    }

    fn run(c: &Case) {
        let mut s = NodeState {
            healthy: c.start_healthy,
            ..NodeState::default()
        };
        let mut flips = Vec::new();
        for (i, o) in c.seq.iter().enumerate() {
            if let Some(tr) = s.observe(*o, &c.t) {
                flips.push((i, tr));
            }
        }
        assert_eq!(flips, c.flips, "{}: transitions", c.name);
        assert_eq!(s.healthy, c.healthy, "{}: health", c.name);
        assert_eq!(s.counters, c.counters, "{}: counters", c.name);
    }

    #[test]
    fn starts_healthy_with_zero_counters() {
        let s = NodeState::new();
        assert!(s.healthy);
        assert_eq!(s.counters, Counters::default());
    }

    #[test]
    fn observation_sequences() {
        let cases = [
            Case {
                name: "successes on a healthy node only count",
                start_healthy: true,
                t: DEFAULT_ACTIVE,
                seq: &[S, S, S],
                flips: &[],
                healthy: true,
                counters: ctr(3, 0, 0, 0),
            },
            Case {
                name: "tcp failures flip at threshold and reset counters",
                start_healthy: true,
                t: DEFAULT_ACTIVE,
                seq: &[T, T],
                flips: &[(1, DOWN)],
                healthy: false,
                counters: ctr(0, 0, 0, 0),
            },
            Case {
                name: "one below threshold does not flip",
                start_healthy: true,
                t: DEFAULT_ACTIVE,
                seq: &[H, H, H, H],
                flips: &[],
                healthy: true,
                counters: ctr(0, 4, 0, 0),
            },
            Case {
                name: "http failures flip at 5",
                start_healthy: true,
                t: DEFAULT_ACTIVE,
                seq: &[H, H, H, H, H],
                flips: &[(4, DOWN)],
                healthy: false,
                counters: ctr(0, 0, 0, 0),
            },
            Case {
                name: "timeouts flip at 3",
                start_healthy: true,
                t: DEFAULT_ACTIVE,
                seq: &[O, O, O],
                flips: &[(2, DOWN)],
                healthy: false,
                counters: ctr(0, 0, 0, 0),
            },
            Case {
                name: "a success clears all failure counters",
                start_healthy: true,
                t: DEFAULT_ACTIVE,
                seq: &[H, T, O, O, S, T, O, O],
                flips: &[],
                healthy: true,
                counters: ctr(0, 0, 1, 2),
            },
            Case {
                name: "different failure kinds count separately",
                start_healthy: true,
                t: DEFAULT_ACTIVE,
                seq: &[H, O, H, O, H, O],
                flips: &[(5, DOWN)],
                healthy: false,
                counters: ctr(0, 0, 0, 0),
            },
            Case {
                name: "unhealthy: successes flip back and reset",
                start_healthy: false,
                t: DEFAULT_ACTIVE,
                seq: &[S, S],
                flips: &[(1, UP)],
                healthy: true,
                counters: ctr(0, 0, 0, 0),
            },
            Case {
                name: "unhealthy: an interleaved failure resets success",
                start_healthy: false,
                t: DEFAULT_ACTIVE,
                seq: &[S, T, S, H, S],
                flips: &[],
                healthy: false,
                counters: ctr(1, 0, 0, 0),
            },
            Case {
                name: "unhealthy: failures count but never flip",
                start_healthy: false,
                t: DEFAULT_ACTIVE,
                seq: &[T, T, T, H, H, H, H, H, H],
                flips: &[],
                healthy: false,
                counters: ctr(0, 6, 3, 0),
            },
            Case {
                name: "full cycle down, up, down",
                start_healthy: true,
                t: DEFAULT_ACTIVE,
                seq: &[T, T, S, S, O, O, O, S],
                flips: &[(1, DOWN), (3, UP), (6, DOWN)],
                healthy: false,
                counters: ctr(1, 0, 0, 0),
            },
            Case {
                name: "threshold 1 flips immediately both ways",
                start_healthy: true,
                t: th(1, 1, 1, 1),
                seq: &[H, S, T, S, O, S],
                flips: &[(0, DOWN), (1, UP), (2, DOWN), (3, UP), (4, DOWN), (5, UP)],
                healthy: true,
                counters: ctr(0, 0, 0, 0),
            },
            Case {
                name: "disabled tcp counter: tcp failures ignored entirely",
                start_healthy: true,
                t: th(5, 5, 0, 7),
                seq: &[S, T, T, T, T, T, T],
                flips: &[],
                healthy: true,
                counters: ctr(1, 0, 0, 0),
            },
            Case {
                name: "disabled successes: passive never readmits, successes do not clear",
                start_healthy: true,
                t: th(0, 2, 2, 2),
                seq: &[H, S, H, S, S, S],
                flips: &[(2, DOWN)],
                healthy: false,
                counters: ctr(0, 0, 0, 0),
            },
            Case {
                name: "all disabled: nothing ever changes",
                start_healthy: true,
                t: th(0, 0, 0, 0),
                seq: &[H, T, O, S, H, T, O],
                flips: &[],
                healthy: true,
                counters: ctr(0, 0, 0, 0),
            },
            Case {
                name: "reaching the success threshold while healthy does not flip",
                start_healthy: true,
                t: th(1, 5, 2, 3),
                seq: &[S, S],
                flips: &[],
                healthy: true,
                counters: ctr(2, 0, 0, 0),
            },
            Case {
                name: "failure counters resume from zero after recovery",
                start_healthy: true,
                t: DEFAULT_ACTIVE,
                seq: &[T, T, S, S, T],
                flips: &[(1, DOWN), (3, UP)],
                healthy: true,
                counters: ctr(0, 0, 1, 0),
            },
        ];
        for c in &cases {
            run(c);
        }
    }

    #[test]
    fn counters_saturate() {
        let t = DEFAULT_ACTIVE;
        let mut s = NodeState {
            healthy: true,
            counters: ctr(u32::MAX, 0, 0, 0),
        };
        assert_eq!(s.observe(S, &t), None);
        assert_eq!(s.counters.success, u32::MAX);

        let mut s = NodeState {
            healthy: false,
            counters: ctr(0, u32::MAX, u32::MAX, u32::MAX),
        };
        for o in [H, T, O] {
            assert_eq!(s.observe(o, &t), None);
        }
        assert_eq!(s.counters, ctr(0, u32::MAX, u32::MAX, u32::MAX));
    }

    #[test]
    fn step_reports_the_counters_that_flipped() {
        let mut s = NodeState::new();
        assert_eq!(s.step(H, &DEFAULT_ACTIVE), None);
        assert_eq!(s.step(T, &DEFAULT_ACTIVE), None);
        assert_eq!(s.step(T, &DEFAULT_ACTIVE), Some((DOWN, ctr(0, 1, 2, 0))));
        assert_eq!(s.counters, Counters::default());
    }

    #[test]
    fn observation_names() {
        assert_eq!(
            [S, H, T, O].map(|o| o.to_string()),
            ["success", "http_failure", "tcp_failure", "timeout"]
        );
    }
}
