//! From the replicas the metrics ask for to the replicas the target gets, as upstream
//! normalizes them. The controller remembers, per HPA, its recent recommendations and scale
//! changes ([`Memory`]).
//!
//! - **Without `behavior`:** the highest recommendation of the downscale stabilization window
//!   (`--horizontal-pod-autoscaler-downscale-stabilization`, 5 min) wins; a scale-up goes to at
//!   most `max(2 × current, 4)`; the result stays within `[min, max]` (at least 1).
//! - **With `behavior`:** the recommendation is held between the lowest of the scale-up window
//!   and the highest of the scale-down window; then each direction's policies limit how many
//!   pods (or what percent) may be added or removed per period, counting the changes already
//!   made in it, and `selectPolicy` picks the most (`Max`) or least (`Min`) change, or none.
//!
//! The reason and message of each outcome are upstream's, for the `AbleToScale` and
//! `ScalingLimited` conditions.

use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// An outcome with the reason and message of its condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limited {
    pub replicas: i32,
    pub reason: &'static str,
    pub message: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Select {
    Max,
    Min,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    Pods { value: i32, period: Duration },
    Percent { value: i32, period: Duration },
}

impl Policy {
    fn period(self) -> Duration {
        match self {
            Policy::Pods { period, .. } | Policy::Percent { period, .. } => period,
        }
    }
}

/// One direction's rules, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rules {
    pub window: Duration,
    pub select: Select,
    pub policies: Vec<Policy>,
}

impl Rules {
    /// Reads an HPA's rules; `default_window` stands in for a missing stabilization window
    /// (0 up; the controller's flag down).
    pub fn read(rules: Option<&HPAScalingRules>, default_window: Duration, up: bool) -> Self {
        let policies = rules
            .and_then(|r| r.policies.as_ref())
            .map(|policies| {
                policies
                    .iter()
                    .filter_map(|p| {
                        let period = Duration::from_secs(p.period_seconds.max(0) as u64);
                        match p.type_.as_str() {
                            "Pods" => Some(Policy::Pods {
                                value: p.value,
                                period,
                            }),
                            "Percent" => Some(Policy::Percent {
                                value: p.value,
                                period,
                            }),
                            _ => None,
                        }
                    })
                    .collect()
            })
            .unwrap_or_else(|| {
                let period = Duration::from_secs(15);
                if up {
                    vec![
                        Policy::Pods { value: 4, period },
                        Policy::Percent { value: 100, period },
                    ]
                } else {
                    vec![Policy::Percent { value: 100, period }]
                }
            });
        Self {
            window: rules
                .and_then(|r| r.stabilization_window_seconds)
                .map_or(default_window, |s| Duration::from_secs(s.max(0) as u64)),
            select: match rules.and_then(|r| r.select_policy.as_deref()) {
                Some("Min") => Select::Min,
                Some("Disabled") => Select::Disabled,
                _ => Select::Max,
            },
            policies,
        }
    }

    fn longest_period(&self) -> Duration {
        self.policies
            .iter()
            .map(|p| p.period())
            .max()
            .unwrap_or_default()
    }
}

/// Both directions' rules of an HPA with a `behavior`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

impl Behavior {
    pub fn read(behavior: &HorizontalPodAutoscalerBehavior, downscale_window: Duration) -> Self {
        Self {
            up: Rules::read(behavior.scale_up.as_ref(), Duration::ZERO, true),
            down: Rules::read(behavior.scale_down.as_ref(), downscale_window, false),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Change {
    replicas: i32,
    at: Instant,
    outdated: bool,
}

/// What the controller remembers of one HPA between syncs.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    recommendations: Vec<(i32, Instant)>,
    ups: Vec<Change>,
    downs: Vec<Change>,
}

impl Memory {
    /// The first sync remembers the current count as a recommendation, so that a new HPA
    /// does not scale down at once.
    pub fn record_initial(&mut self, current: i32, now: Instant) {
        if self.recommendations.is_empty() {
            self.recommendations.push((current, now));
        }
    }

    /// Remembers `desired`, reusing the slot of one older than `keep`.
    fn remember(&mut self, desired: i32, now: Instant, old: impl Fn(Instant) -> bool) {
        match self.recommendations.iter().position(|(_, at)| old(*at)) {
            Some(i) => self.recommendations[i] = (desired, now),
            None => self.recommendations.push((desired, now)),
        }
    }

    /// Without `behavior`: the highest recommendation within `window`, `desired` included.
    pub fn stabilize(&mut self, desired: i32, window: Duration, now: Instant) -> i32 {
        let cutoff = now.checked_sub(window);
        let old = |at: Instant| cutoff.is_some_and(|c| at < c);
        let highest = self
            .recommendations
            .iter()
            .filter(|(_, at)| !old(*at))
            .map(|(r, _)| *r)
            .fold(desired, i32::max);
        self.remember(desired, now, old);
        highest
    }

    /// With `behavior`: `current` held between the lowest recommendation of the scale-up
    /// window and the highest of the scale-down window, `desired` included in both; and the
    /// reason and message for when that differs from `desired`.
    pub fn stabilize_with(
        &mut self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        now: Instant,
    ) -> Limited {
        let up_cutoff = now.checked_sub(behavior.up.window);
        let down_cutoff = now.checked_sub(behavior.down.window);
        let after = |cutoff: Option<Instant>, at: Instant| cutoff.is_none_or(|c| at > c);
        let (mut up, mut down) = (desired, desired);
        for (recommendation, at) in &self.recommendations {
            if after(up_cutoff, *at) {
                up = up.min(*recommendation);
            }
            if after(down_cutoff, *at) {
                down = down.max(*recommendation);
            }
        }
        let replicas = current.max(up).min(down);
        self.remember(desired, now, |at| {
            up_cutoff.is_some_and(|c| at < c) && down_cutoff.is_some_and(|c| at < c)
        });
        if desired >= current {
            Limited {
                replicas,
                reason: "ScaleUpStabilized",
                message: "recent recommendations were lower than current one, applying the lowest recent recommendation",
            }
        } else {
            Limited {
                replicas,
                reason: "ScaleDownStabilized",
                message: "recent recommendations were higher than current one, applying the highest recent recommendation",
            }
        }
    }

    /// With `behavior`: `desired` limited by the policies of its direction and `[min, max]`.
    pub fn limit_with(
        &self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        now: Instant,
    ) -> Limited {
        let within = Limited {
            replicas: desired,
            reason: "DesiredWithinRange",
            message: "the desired count is within the acceptable range",
        };
        if desired > current {
            let limit = self.scale_up_limit(&behavior.up, current, now).max(current);
            let (allowed, reason, message) = if max > limit {
                (
                    limit,
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate",
                )
            } else {
                (
                    max,
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                )
            };
            if desired > allowed {
                return Limited {
                    replicas: allowed,
                    reason,
                    message,
                };
            }
        } else if desired < current {
            let limit = self
                .scale_down_limit(&behavior.down, current, now)
                .min(current);
            let (allowed, reason, message) = if min < limit {
                (
                    limit,
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate",
                )
            } else {
                (
                    min,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                )
            };
            if desired < allowed {
                return Limited {
                    replicas: allowed,
                    reason,
                    message,
                };
            }
        }
        within
    }

    /// The count at the start of a policy's period: today's minus what was added in it,
    /// plus what was removed.
    fn period_start(&self, current: i32, period: Duration, now: Instant) -> i32 {
        let changed = |changes: &[Change]| -> i32 {
            let cutoff = now.checked_sub(period);
            changes
                .iter()
                .filter(|c| cutoff.is_none_or(|cut| c.at > cut))
                .map(|c| c.replicas)
                .sum()
        };
        current - changed(&self.ups) + changed(&self.downs)
    }

    fn scale_up_limit(&self, rules: &Rules, current: i32, now: Instant) -> i32 {
        let proposals = rules.policies.iter().map(|policy| {
            let start = self.period_start(current, policy.period(), now);
            match *policy {
                Policy::Pods { value, .. } => start.saturating_add(value),
                Policy::Percent { value, .. } => {
                    // Rounded up, or a small count could never grow.
                    (f64::from(start) * (1.0 + f64::from(value) / 100.0)).ceil() as i32
                }
            }
        });
        match rules.select {
            Select::Disabled => current,
            Select::Max => proposals.max().unwrap_or(i32::MIN),
            Select::Min => proposals.min().unwrap_or(i32::MAX),
        }
    }

    fn scale_down_limit(&self, rules: &Rules, current: i32, now: Instant) -> i32 {
        let proposals = rules.policies.iter().map(|policy| {
            let start = self.period_start(current, policy.period(), now);
            match *policy {
                Policy::Pods { value, .. } => start - value,
                Policy::Percent { value, .. } => {
                    (f64::from(start) * (1.0 - f64::from(value) / 100.0)) as i32
                }
            }
        });
        // The most change is the lowest floor.
        match rules.select {
            Select::Disabled => current,
            Select::Max => proposals.min().unwrap_or(i32::MAX),
            Select::Min => proposals.max().unwrap_or(i32::MIN),
        }
    }

    /// Remembers a change of the target's replicas, for the policies' periods (only HPAs
    /// with a `behavior` need them).
    pub fn record_scale(&mut self, behavior: &Behavior, from: i32, to: i32, now: Instant) {
        let (changes, rules, replicas) = if to > from {
            (&mut self.ups, &behavior.up, to - from)
        } else if to < from {
            (&mut self.downs, &behavior.down, from - to)
        } else {
            return;
        };
        let longest = rules.longest_period();
        for change in changes.iter_mut() {
            if now.checked_sub(longest).is_some_and(|cut| change.at <= cut) {
                change.outdated = true;
            }
        }
        let fresh = Change {
            replicas,
            at: now,
            outdated: false,
        };
        match changes.iter().position(|c| c.outdated) {
            Some(i) => changes[i] = fresh,
            None => changes.push(fresh),
        }
    }
}

/// Without `behavior`: `desired` within `[min, max]` (min at least 1), and a scale-up to at
/// most `max(2 × current, 4)`.
pub(crate) fn limit(current: i32, desired: i32, min: i32, max: i32) -> Limited {
    let scale_up_limit = current.saturating_mul(2).max(4);
    let (allowed_max, reason, message) = if max > scale_up_limit {
        (
            scale_up_limit,
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate",
        )
    } else {
        (
            max,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        )
    };
    let allowed_min = min.max(1);
    if desired < allowed_min {
        return Limited {
            replicas: allowed_min,
            reason: "TooFewReplicas",
            message: "the desired replica count is less than the minimum replica count",
        };
    }
    if desired > allowed_max {
        return Limited {
            replicas: allowed_max,
            reason,
            message,
        };
    }
    Limited {
        replicas: desired,
        reason: "DesiredWithinRange",
        message: "the desired count is within the acceptable range",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn behavior(up: Rules, down: Rules) -> Behavior {
        Behavior { up, down }
    }

    fn rules(window: u64, select: Select, policies: Vec<Policy>) -> Rules {
        Rules {
            window: secs(window),
            select,
            policies,
        }
    }

    #[test]
    fn without_behavior_scale_up_doubles_at_most_and_bounds_hold() {
        assert_eq!(limit(1, 10, 1, 20).replicas, 4);
        assert_eq!(limit(1, 10, 1, 20).reason, "ScaleUpLimit");
        assert_eq!(limit(5, 30, 1, 20).replicas, 10);
        assert_eq!(limit(5, 30, 1, 8).replicas, 8);
        assert_eq!(limit(5, 30, 1, 8).reason, "TooManyReplicas");
        assert_eq!(limit(5, 0, 2, 8).replicas, 2);
        assert_eq!(limit(5, 0, 2, 8).reason, "TooFewReplicas");
        assert_eq!(limit(5, 6, 2, 8).reason, "DesiredWithinRange");
    }

    #[test]
    fn without_behavior_scale_down_waits_for_the_window() {
        let start = Instant::now();
        let mut memory = Memory::default();
        memory.record_initial(5, start);
        // Load drops: the recommendation of 5 holds for the window.
        assert_eq!(memory.stabilize(1, secs(300), start + secs(15)), 5);
        assert_eq!(memory.stabilize(1, secs(300), start + secs(299)), 5);
        // Once the 5 is older than the window, 1 wins.
        assert_eq!(memory.stabilize(1, secs(300), start + secs(301)), 1);
        // A scale-up is never held back.
        assert_eq!(memory.stabilize(7, secs(300), start + secs(302)), 7);
    }

    #[test]
    fn behavior_windows_hold_both_ways() {
        let start = Instant::now();
        let b = behavior(
            rules(60, Select::Max, vec![]),
            rules(120, Select::Max, vec![]),
        );
        let mut memory = Memory::default();
        memory.record_initial(3, start);
        // Up: the lowest of the last 60 s, 3, holds the count at 3.
        let held = memory.stabilize_with(&b, 3, 8, start + secs(10));
        assert_eq!((held.replicas, held.reason), (3, "ScaleUpStabilized"));
        // After the 3 leaves the up window, the lowest is 8.
        let held = memory.stabilize_with(&b, 3, 9, start + secs(65));
        assert_eq!(held.replicas, 8);
        // Down: the highest of the last 120 s (9) holds.
        let held = memory.stabilize_with(&b, 9, 2, start + secs(100));
        assert_eq!((held.replicas, held.reason), (9, "ScaleDownStabilized"));
    }

    #[test]
    fn policies_limit_changes_per_period() {
        let start = Instant::now();
        let up = rules(
            0,
            Select::Max,
            vec![
                Policy::Pods {
                    value: 4,
                    period: secs(60),
                },
                Policy::Percent {
                    value: 100,
                    period: secs(60),
                },
            ],
        );
        let down = rules(
            0,
            Select::Max,
            vec![Policy::Pods {
                value: 1,
                period: secs(30),
            }],
        );
        let b = behavior(up, down);
        let mut memory = Memory::default();
        // From 2: max(2 + 4, 2 × 2) = 6.
        let limited = memory.limit_with(&b, 2, 20, 1, 50, start);
        assert_eq!((limited.replicas, limited.reason), (6, "ScaleUpLimit"));
        memory.record_scale(&b, 2, 6, start);
        // Within the same minute, the period began at 2: still at most 6.
        assert_eq!(
            memory
                .limit_with(&b, 6, 20, 1, 50, start + secs(30))
                .replicas,
            6
        );
        // A minute later it began at 6: max(10, 12) = 12.
        assert_eq!(
            memory
                .limit_with(&b, 6, 20, 1, 50, start + secs(61))
                .replicas,
            12
        );
        // Max bounds before the rate does.
        let limited = memory.limit_with(&b, 6, 20, 1, 8, start + secs(61));
        assert_eq!((limited.replicas, limited.reason), (8, "TooManyReplicas"));
        // Down one pod per 30 s.
        let limited = memory.limit_with(&b, 6, 1, 1, 50, start + secs(62));
        assert_eq!((limited.replicas, limited.reason), (5, "ScaleDownLimit"));
        memory.record_scale(&b, 6, 5, start + secs(62));
        assert_eq!(
            memory
                .limit_with(&b, 5, 1, 1, 50, start + secs(70))
                .replicas,
            5
        );
        assert_eq!(
            memory
                .limit_with(&b, 5, 1, 1, 50, start + secs(93))
                .replicas,
            4
        );
        // Min over the policies, and Disabled.
        let min = behavior(
            rules(
                0,
                Select::Min,
                vec![
                    Policy::Pods {
                        value: 1,
                        period: secs(15),
                    },
                    Policy::Percent {
                        value: 100,
                        period: secs(15),
                    },
                ],
            ),
            rules(0, Select::Disabled, vec![]),
        );
        let fresh = Memory::default();
        assert_eq!(fresh.limit_with(&min, 4, 20, 1, 50, start).replicas, 5);
        let disabled = fresh.limit_with(&min, 4, 1, 1, 50, start);
        assert_eq!((disabled.replicas, disabled.reason), (4, "ScaleDownLimit"));
    }

    #[test]
    fn rules_take_upstreams_defaults() {
        let up = Rules::read(None, Duration::ZERO, true);
        assert_eq!(up.select, Select::Max);
        assert_eq!(up.policies.len(), 2);
        let down = Rules::read(None, secs(300), false);
        assert_eq!(down.window, secs(300));
        assert_eq!(
            down.policies,
            vec![Policy::Percent {
                value: 100,
                period: secs(15)
            }]
        );
    }
}
