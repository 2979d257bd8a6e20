//! A runtime that runs nothing, for unit tests of what sits above the seam (the pod worker):
//! each container does what the test scripted for its name, and the test can end it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{Container, ContainerSpec, Error, Exit, Result, Runtime};

/// What a fake container does.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Ends by itself after this long (of tokio's clock), with this exit.
    pub exit_after: Option<(Duration, Exit)>,
    /// Ignores `terminate` (only `kill` ends it).
    pub ignores_terminate: bool,
    /// Refuses to start, with this message.
    pub fails_to_start: Option<String>,
}

/// The fake runtime: containers by name, scripted.
#[derive(Default)]
pub struct FakeRuntime {
    scripts: Mutex<HashMap<String, Script>>,
    started: Mutex<Vec<(ContainerSpec, Arc<FakeContainer>)>>,
}

impl FakeRuntime {
    /// What the containers named `name` do from now on.
    pub fn script(&self, name: &str, script: Script) {
        self.scripts
            .lock()
            .unwrap()
            .insert(name.to_string(), script);
    }

    /// Every container started so far, in order.
    pub fn started(&self) -> Vec<(ContainerSpec, Arc<FakeContainer>)> {
        self.started.lock().unwrap().clone()
    }

    /// The names of the containers started so far, in order.
    pub fn started_names(&self) -> Vec<String> {
        self.started()
            .into_iter()
            .map(|(spec, _)| spec.name)
            .collect()
    }

    /// The last container started with `name`.
    pub fn last(&self, name: &str) -> Option<Arc<FakeContainer>> {
        self.started()
            .into_iter()
            .rev()
            .find(|(spec, _)| spec.name == name)
            .map(|(_, c)| c)
    }
}

impl Runtime for FakeRuntime {
    fn handler(&self) -> &'static str {
        "fake"
    }

    fn start(&self, spec: ContainerSpec) -> Result<Arc<dyn Container>> {
        let script = self
            .scripts
            .lock()
            .unwrap()
            .get(&spec.name)
            .cloned()
            .unwrap_or_default();
        if let Some(message) = &script.fails_to_start {
            return Err(Error::Setup(message.clone()));
        }
        let (exit, _) = watch::channel(None);
        let container = Arc::new(FakeContainer {
            exit,
            terminated: AtomicBool::new(false),
            ignores_terminate: script.ignores_terminate,
        });
        if let Some((after, code)) = script.exit_after {
            let ends = container.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                ends.finish(code);
            });
        }
        self.started.lock().unwrap().push((spec, container.clone()));
        Ok(container)
    }
}

/// A fake container: it runs until its script, the test or a stop ends it.
pub struct FakeContainer {
    exit: watch::Sender<Option<Exit>>,
    terminated: AtomicBool,
    ignores_terminate: bool,
}

impl FakeContainer {
    /// Ends the container with `exit`, unless it has ended already.
    pub fn finish(&self, exit: Exit) {
        self.exit.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(exit);
            true
        });
    }

    /// Whether it was asked to finish.
    pub fn was_terminated(&self) -> bool {
        self.terminated.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Container for FakeContainer {
    fn terminate(&self) {
        self.terminated.store(true, Ordering::SeqCst);
        if !self.ignores_terminate {
            self.finish(Exit::completed());
        }
    }

    fn kill(&self) {
        self.finish(Exit::stopped());
    }

    fn is_finished(&self) -> bool {
        self.exit.borrow().is_some()
    }

    async fn wait(&self) -> Exit {
        let mut exit = self.exit.subscribe();
        let ended = exit.wait_for(Option::is_some).await;
        ended
            .map(|e| e.clone().expect("waited for it"))
            .unwrap_or_else(|_| Exit::error(128, "the fake container was dropped"))
    }
}
