//! Bosun's shared API vocabulary: the pieces every other crate agrees on.
//!
//! - [`cidr`]: IPv4 blocks (`10.88.0.0/16`) for the pod and service ranges.
//! - [`cluster`]: the cluster-wide blocks every component agrees on, and where they are kept.
//! - [`labels`]: Kubernetes label selectors (`app=web,tier in (a,b),!legacy`).
//! - [`fields`]: field selectors (`spec.nodeName=n1,status.phase!=Failed`).
//! - [`names`]: the DNS-1123 and label-key rules for object names.
//! - [`cron`]: CronJob schedules (`*/15 9-17 * * mon-fri`, `@hourly`).
//! - [`duration`]: Go/Kubernetes style durations (`40s`, `5m`, `1h30m`).
//! - [`function`]: the `serving.bosun.dev/v1` `Function` kind (our own; k8s-openapi has no such
//!   type).
//! - [`metrics`]: `metrics.k8s.io` PodMetrics and NodeMetrics, for the API server's clients.
//! - [`promtext`]: reading Prometheus' text format, and histogram quantiles.
//! - [`resources`]: the registry of served kinds (group, version, plural, scope, columns).
//! - [`ratelimit`]: the token bucket that paces event writers.
//!
//! This crate does no I/O and has no async code, so that the control plane, the node agent and
//! the command line can all use it cheaply. Kubernetes wire types come from `k8s-openapi`, not
//! from here; this crate holds only what those types do not (Bosun's own kinds included).

pub mod certificates;
pub mod cidr;
pub mod cluster;
pub mod cron;
pub mod duration;
pub mod fields;
pub mod function;
pub mod labels;
pub mod metrics;
pub mod names;
pub mod netpol;
pub mod promtext;
pub mod quantity;
pub mod ratelimit;
pub mod resources;
pub mod time;
