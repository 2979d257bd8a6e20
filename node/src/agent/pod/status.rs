//! The pod's status from its containers' slots, as the kubelet reports it: the phase by the
//! kubelet's rules, the Initialized, ContainersReady and Ready conditions (conditions others
//! own, such as PodScheduled, are kept), and each container's status. Pure functions.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::container::{Finished, Slot, State};

/// What the status is made from.
pub(super) struct Pod<'a> {
    pub init: &'a [Slot],
    pub apps: &'a [Slot],
    /// An init container failed for good.
    pub init_failed: bool,
    /// Every app container finished for good (sidecars no longer count for readiness).
    pub apps_done: bool,
    pub node_ip: Ipv4Addr,
    pub pod_ip: Option<Ipv4Addr>,
    pub start_time: Time,
    /// The conditions on the server (ours and others').
    pub conditions: &'a [PodCondition],
    /// What this worker wrote last.
    pub published: Option<&'a PodStatus>,
    pub now: Time,
}

/// The pod's phase by the kubelet's rules.
pub(super) fn phase(pod: &Pod<'_>) -> &'static str {
    if pod.init_failed {
        return "Failed";
    }
    if !pod.init.iter().all(Slot::init_done) {
        return "Pending";
    }
    let (mut waiting_first, mut running, mut succeeded, mut failed) = (0, 0, 0, 0);
    for slot in pod.apps {
        match &slot.state {
            State::Running { .. } => running += 1,
            State::Terminated(f) if f.exit.code == 0 => succeeded += 1,
            State::Terminated(_) => failed += 1,
            // Waiting to restart counts as running, as in the kubelet.
            State::Waiting { .. } | State::Launching if slot.last.is_some() => running += 1,
            _ => waiting_first += 1,
        }
    }
    if waiting_first > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if failed > 0 {
        "Failed"
    } else if succeeded > 0 {
        "Succeeded"
    } else {
        "Pending"
    }
}

/// The conditions this worker owns.
const OURS: [&str; 3] = ["Initialized", "ContainersReady", "Ready"];

pub(super) fn status(pod: &Pod<'_>) -> PodStatus {
    let initialized = pod.init.iter().all(Slot::init_done);
    // Sidecars count for readiness (until the app containers are done).
    let unready: Vec<&str> = pod
        .init
        .iter()
        .filter(|s| s.sidecar && !pod.apps_done)
        .chain(pod.apps)
        .filter(|s| !s.ready())
        .map(|s| s.spec.name.as_str())
        .collect();
    let phase = phase(pod);
    let incomplete: Vec<&str> = pod
        .init
        .iter()
        .filter(|s| !s.init_done())
        .map(|s| s.spec.name.as_str())
        .collect();
    let ready = unready.is_empty();
    let unready_reason = if matches!(phase, "Succeeded" | "Failed") {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let unready_message = format!("containers with unready status: [{}]", unready.join(" "));
    let ours = [
        condition(
            "Initialized",
            initialized,
            "ContainersNotInitialized",
            format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            ),
        ),
        condition(
            "ContainersReady",
            ready,
            unready_reason,
            unready_message.clone(),
        ),
        condition("Ready", ready, unready_reason, unready_message),
    ];
    // Keep the conditions others own (PodScheduled from the scheduler, readiness gates), and
    // the transition time of ours that did not change.
    let mut conditions: Vec<PodCondition> = pod
        .conditions
        .iter()
        .filter(|c| !OURS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    for mut c in ours {
        let same = |p: &&PodCondition| p.type_ == c.type_ && p.status == c.status;
        let before = pod
            .conditions
            .iter()
            .find(same)
            .or_else(|| {
                pod.published
                    .and_then(|p| p.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(same))
            })
            .and_then(|p| p.last_transition_time.clone());
        c.last_transition_time = Some(before.unwrap_or_else(|| pod.now.clone()));
        conditions.push(c);
    }
    let host_ip = pod.node_ip.to_string();
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(host_ip.clone()),
        host_ips: Some(vec![HostIP { ip: host_ip }]),
        pod_ip: pod.pod_ip.map(|ip| ip.to_string()),
        pod_ips: pod.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: Some(pod.start_time.clone()),
        init_container_statuses: Some(pod.init.iter().map(|s| container_status(s, true)).collect()),
        container_statuses: Some(
            pod.apps
                .iter()
                .map(|s| container_status(s, false))
                .collect(),
        ),
        ..Default::default()
    }
}

fn condition(kind: &str, ok: bool, reason: &str, message: String) -> PodCondition {
    PodCondition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: (!ok).then(|| reason.to_string()),
        message: (!ok).then_some(message),
        ..Default::default()
    }
}

fn terminated(f: &Finished) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: f.exit.code,
            reason: Some(f.exit.reason.clone()),
            message: f.exit.message.clone(),
            started_at: f.started_at.clone(),
            finished_at: Some(f.finished_at.clone()),
            container_id: Some(f.container_id.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    }
}

fn container_status(slot: &Slot, init: bool) -> ContainerStatus {
    let (state, ready, id) = match &slot.state {
        State::Waiting {
            reason, message, ..
        } => (waiting(reason, message.clone()), false, None),
        State::Launching => {
            let reason = match &slot.last {
                Some(_) => "CrashLoopBackOff",
                None if init => "PodInitializing",
                None => "ContainerCreating",
            };
            (waiting(reason, None), false, None)
        }
        State::Running {
            started_at,
            container_id,
            ..
        } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(started_at.clone()),
                }),
                ..Default::default()
            },
            (!init || slot.sidecar) && slot.ready(),
            Some(container_id.clone()),
        ),
        State::Terminated(f) => (
            terminated(f),
            init && f.exit.code == 0,
            Some(f.container_id.clone()),
        ),
    };
    ContainerStatus {
        name: slot.spec.name.clone(),
        image: slot.spec.image.clone().unwrap_or_default(),
        image_id: slot.image_id.clone(),
        ready,
        restart_count: slot.restart_count,
        started: Some(slot.started()),
        state: Some(state),
        last_state: Some(slot.last.as_ref().map(terminated).unwrap_or_default()),
        container_id: id.filter(|i| !i.is_empty()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Exit;
    use k8s_openapi::api::core::v1::Container;

    fn slot(name: &str, state: State) -> Slot {
        let mut slot = Slot::new(
            Container {
                name: name.to_string(),
                image: Some(format!("registry.local/{name}:v1")),
                ..Default::default()
            },
            "ContainerCreating",
        );
        slot.state = state;
        slot
    }

    fn ended(code: i32) -> State {
        State::Terminated(Finished {
            exit: Exit {
                code,
                reason: if code == 0 { "Completed" } else { "Error" }.to_string(),
                message: None,
            },
            started_at: None,
            finished_at: super::super::container::now(),
            container_id: "fake://1".to_string(),
        })
    }

    fn pod<'a>(init: &'a [Slot], apps: &'a [Slot], conditions: &'a [PodCondition]) -> Pod<'a> {
        Pod {
            init,
            apps,
            init_failed: false,
            apps_done: false,
            node_ip: "10.0.0.1".parse().unwrap(),
            pod_ip: Some("10.88.0.5".parse().unwrap()),
            start_time: super::super::container::now(),
            conditions,
            published: None,
            now: super::super::container::now(),
        }
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let waiting = || slot("a", State::Launching);
        assert_eq!(phase(&pod(&[], &[waiting()], &[])), "Pending");
        assert_eq!(phase(&pod(&[], &[slot("a", ended(0))], &[])), "Succeeded");
        assert_eq!(
            phase(&pod(&[], &[slot("a", ended(0)), slot("b", ended(1))], &[])),
            "Failed"
        );
        let mut restarting = waiting();
        restarting.last = Some(match ended(1) {
            State::Terminated(f) => f,
            _ => unreachable!(),
        });
        assert_eq!(phase(&pod(&[], &[restarting], &[])), "Running");
        let unfinished_init = [waiting()];
        assert_eq!(phase(&pod(&unfinished_init, &[waiting()], &[])), "Pending");
        let mut failed = pod(&[], &[], &[]);
        failed.init_failed = true;
        assert_eq!(phase(&failed), "Failed");
    }

    #[test]
    fn conditions_name_the_unready_containers_and_keep_others() {
        let scheduled = PodCondition {
            type_: "PodScheduled".to_string(),
            status: "True".to_string(),
            ..Default::default()
        };
        let apps = [slot("web", State::Launching), slot("done", ended(0))];
        let status = status(&pod(&[], &apps, std::slice::from_ref(&scheduled)));
        let conditions = status.conditions.unwrap();
        assert_eq!(conditions[0], scheduled, "others' conditions are kept");
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [web done]")
        );
        assert!(ready.last_transition_time.is_some());
        let web = &status.container_statuses.unwrap()[0];
        let waiting = web.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.88.0.5"));
        assert_eq!(status.phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let long_ago = Time("2020-01-01T00:00:00Z".parse().unwrap());
        let before = PodCondition {
            type_: "Initialized".to_string(),
            status: "True".to_string(),
            last_transition_time: Some(long_ago.clone()),
            ..Default::default()
        };
        let status = status(&pod(&[], &[], std::slice::from_ref(&before)));
        let initialized = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Initialized")
            .unwrap();
        assert_eq!(initialized.last_transition_time, Some(long_ago));
    }
}
