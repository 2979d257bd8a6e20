//! `wasi:sockets/ip-name-lookup` for components, answered by the node: cluster names
//! (Services, see [`crate::network::names`]) from the agent's resolver, other names by the
//! node's own resolver, as wasmtime-wasi's implementation would. It replaces wasmtime-wasi's
//! definition of the interface in the linker, since that one only knows the host's resolver
//! (which runs in the agent's network namespace and knows nothing of the cluster).

use std::net::IpAddr;

use futures::FutureExt;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress};
use wasmtime_wasi::p2::{DynPollable, Network, Pollable, subscribe};

use crate::network::names::{Answer, PodNames};

/// The interface this implements (wasmtime-wasi 48's version; guests importing an older
/// 0.2 version are linked to it too).
const INTERFACE: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// What a component's store gives this interface.
pub trait NameLookupView: Send + 'static {
    fn table(&mut self) -> &mut ResourceTable;
    fn names(&self) -> Option<&PodNames>;
}

/// A lookup in progress or done (the guest's `resolve-address-stream`).
pub struct Resolving(Lookup);

enum Lookup {
    Done(std::vec::IntoIter<IpAddr>),
    Failed(ErrorCode),
    Pending(tokio::task::JoinHandle<Result<Vec<IpAddr>, ErrorCode>>),
}

impl Resolving {
    fn settle(&mut self, result: Result<Result<Vec<IpAddr>, ErrorCode>, tokio::task::JoinError>) {
        self.0 = match result {
            Ok(Ok(addresses)) => Lookup::Done(addresses.into_iter()),
            Ok(Err(code)) => Lookup::Failed(code),
            Err(_) => Lookup::Failed(ErrorCode::PermanentResolverFailure),
        };
    }
}

#[async_trait::async_trait]
impl Pollable for Resolving {
    async fn ready(&mut self) {
        if let Lookup::Pending(handle) = &mut self.0 {
            let result = handle.await;
            self.settle(result);
        }
    }
}

/// Starts resolving `name` for a pod.
fn resolve(names: Option<&PodNames>, name: &str) -> Resolving {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Resolving(Lookup::Done(vec![ip].into_iter()));
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Resolving(Lookup::Failed(ErrorCode::InvalidArgument));
    }
    if let Some(names) = names
        && let Answer::Cluster(ips) = names.resolver.lookup(name, &names.namespace)
    {
        if ips.is_empty() {
            return Resolving(Lookup::Failed(ErrorCode::NameUnresolvable));
        }
        return Resolving(Lookup::Done(
            ips.into_iter()
                .map(IpAddr::V4)
                .collect::<Vec<_>>()
                .into_iter(),
        ));
    }
    let name = name.to_string();
    let learner = names.and_then(|n| Some((n.pod_ip, n.policies.clone()?)));
    Resolving(Lookup::Pending(tokio::spawn(async move {
        match tokio::net::lookup_host((name.as_str(), 0)).await {
            Ok(addresses) => {
                let addresses: Vec<IpAddr> = addresses.map(|a| a.ip().to_canonical()).collect();
                // What egress by name (`bosun.dev/egress-allow-hosts`) goes by.
                if let Some((pod_ip, policies)) = learner {
                    policies.learn(pod_ip, &name, &addresses);
                }
                Ok(addresses)
            }
            Err(error) => {
                tracing::debug!(%name, %error, "name lookup failed");
                Err(ErrorCode::NameUnresolvable)
            }
        }
    })))
}

/// Defines the interface in `linker`, over wasmtime-wasi's (call after
/// `wasmtime_wasi::p2::add_to_linker_async`).
pub fn add_to_linker<T: NameLookupView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut instance = linker.instance(INTERFACE)?;
    instance.resource(
        "resolve-address-stream",
        ResourceType::host::<Resolving>(),
        |mut store: StoreContextMut<'_, T>, rep| {
            store
                .data_mut()
                .table()
                .delete(Resource::<Resolving>::new_own(rep))?;
            Ok(())
        },
    )?;
    instance.func_wrap(
        "resolve-addresses",
        |mut store: StoreContextMut<'_, T>,
         (network, name): (Resource<Network>, String)|
         -> wasmtime::Result<(Result<Resource<Resolving>, ErrorCode>,)> {
            // The network resource is the capability to look names up.
            store.data_mut().table().get(&network)?;
            let resolving = resolve(store.data().names(), &name);
            if let Lookup::Failed(code) = resolving.0 {
                return Ok((Err(code),));
            }
            Ok((Ok(store.data_mut().table().push(resolving)?),))
        },
    )?;
    instance.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store: StoreContextMut<'_, T>,
         (stream,): (Resource<Resolving>,)|
         -> wasmtime::Result<(Result<Option<IpAddress>, ErrorCode>,)> {
            let resolving = store.data_mut().table().get_mut(&stream)?;
            if let Lookup::Pending(handle) = &mut resolving.0 {
                match handle.now_or_never() {
                    Some(result) => resolving.settle(result),
                    None => return Ok((Err(ErrorCode::WouldBlock),)),
                }
            }
            Ok((match &mut resolving.0 {
                Lookup::Done(addresses) => Ok(addresses.next().map(IpAddress::from)),
                Lookup::Failed(code) => Err(*code),
                Lookup::Pending(_) => Err(ErrorCode::WouldBlock),
            },))
        },
    )?;
    instance.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store: StoreContextMut<'_, T>,
         (stream,): (Resource<Resolving>,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            Ok((subscribe(store.data_mut().table(), stream)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
