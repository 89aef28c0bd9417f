//! The scheduler server: a thin tokio shell around `kiln_scheduler::SchedulerState`.
//!
//! One task owns the state; connections feed it events through a channel and it routes the
//! commands it gets back to per-connection writers (which batch them). The state never sees a
//! socket or a clock: the server passes `now` in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kiln_protocol::Role;
use kiln_protocol::messages::{
    ClientId, ClientToScheduler, SchedulerToClient, SchedulerToWorker, WorkerId, WorkerInfo, WorkerToScheduler,
};
use kiln_scheduler::{Command, Config, Event as StateEvent, ObserveLevel, SchedulerEvent, SchedulerState};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::comm::{self, CommError, Outgoing, PacketReader, Security, Sender, TlsRole, Transport, WriteHalf};

mod dashboard;
pub use dashboard::DashboardConfig;
use dashboard::DashboardSide;

/// How the scheduler server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Scheduling policy.
    pub policy: Config,
    /// A worker silent for this long is considered dead.
    pub worker_timeout: Duration,
    /// Where to send the scheduler's typed record of what it did (for a dashboard). `None`,
    /// the default, records nothing.
    pub observer: Option<mpsc::UnboundedSender<SchedulerEvent>>,
    /// TLS, mutual authentication and the token (default: plain TCP, anyone may connect).
    pub security: Security,
    /// Serve the web dashboard and `/metrics` (`None`, the default here, serves none; the
    /// `kiln scheduler` command and `LocalCluster` turn it on).
    pub dashboard: Option<DashboardConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            policy: Config::default(),
            worker_timeout: Duration::from_secs(30),
            observer: None,
            security: Security::default(),
            dashboard: None,
        }
    }
}

enum Event {
    WorkerJoined { id: WorkerId, info: WorkerInfo, tx: Sender<SchedulerToWorker>, kick: oneshot::Sender<()> },
    Worker(WorkerId, Vec<WorkerToScheduler>),
    WorkerLost(WorkerId, String),
    ClientJoined(ClientId, Sender<SchedulerToClient>),
    Client(ClientId, Vec<ClientToScheduler>),
    ClientLost(ClientId),
    Stop(String),
}

/// A running scheduler server.
pub struct SchedulerServer {
    address: SocketAddr,
    scheme: &'static str,
    stop: mpsc::UnboundedSender<Event>,
    done: watch::Receiver<bool>,
    dashboard: Option<kiln_dashboard::Dashboard>,
    dashboard_notice: Option<String>,
}

impl SchedulerServer {
    /// Binds `address` (e.g. `"0.0.0.0:8786"`, or port 0 for any free port) and starts serving
    /// on the current tokio runtime.
    ///
    /// # Errors
    /// The address cannot be bound, or the security settings do not work.
    pub async fn start(address: &str, config: ServerConfig) -> Result<SchedulerServer, CommError> {
        let transport = config.security.transport(TlsRole::Scheduler)?;
        let scheme = transport.listener_scheme();
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| CommError::Io { context: format!("cannot listen on {address}"), source })?;
        let local =
            listener.local_addr().map_err(|source| CommError::Io { context: "local address".into(), source })?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (done_tx, done) = watch::channel(false);
        let (dashboard, dashboard_notice, side) = match &config.dashboard {
            Some(d) => {
                let (dash, notice, side) = start_dashboard(d, local, scheme).await?;
                (Some(dash), notice, Some(side))
            }
            None => (None, None, None),
        };
        tokio::spawn(accept_loop(listener, events_tx.clone(), local, transport));
        tokio::spawn(core(events_rx, events_tx.clone(), config, done_tx, side));
        Ok(SchedulerServer { address: local, scheme, stop: events_tx, done, dashboard, dashboard_notice })
    }

    /// The address workers and clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The address with its scheme, `tls://host:port` or `tcp://host:port`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }

    /// The dashboard's live page (`http://host:port/status`), when it serves one.
    pub fn dashboard_link(&self) -> Option<String> {
        self.dashboard.as_ref().map(|d| d.link())
    }

    /// Why the dashboard is not where it was asked to be (its port was taken), if so.
    pub fn dashboard_notice(&self) -> Option<&str> {
        self.dashboard_notice.as_deref()
    }

    /// Tells workers and clients the scheduler is going away, and stops.
    pub fn stop(&self, reason: &str) {
        let _ = self.stop.send(Event::Stop(reason.to_string()));
    }

    /// Waits until the server has stopped (after [`SchedulerServer::stop`] or a client's
    /// shutdown request).
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }
}

async fn start_dashboard(
    config: &DashboardConfig,
    scheduler: SocketAddr,
    scheme: &str,
) -> Result<(kiln_dashboard::Dashboard, Option<String>, DashboardSide), CommError> {
    let fail = |e: kiln_dashboard::DashboardError| CommError::Io {
        context: "cannot start the dashboard".into(),
        source: std::io::Error::other(e.to_string()),
    };
    let (listener, notice) = kiln_dashboard::bind_or_free_port(&config.address).await.map_err(fail)?;
    // Not logged here: the log may share stdout with the banner that `kiln scheduler` prints
    // first, and callers show `dashboard_notice()` themselves.
    let (publisher, feed) = kiln_dashboard::channel(kiln_dashboard::DEFAULT_INTERVAL);
    let options = kiln_dashboard::DashboardOptions { namespace: config.namespace.clone() };
    let dashboard = kiln_dashboard::Dashboard::serve(listener, feed, options).map_err(fail)?;
    let identity = kiln_dashboard::Identity {
        id: format!("kiln-scheduler-{}", std::process::id()),
        address: format!("{scheme}://{scheduler}"),
        dashboard: dashboard.link(),
        started_us: dashboard::unix_us(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    Ok((dashboard, notice, DashboardSide::new(publisher, identity)))
}

async fn accept_loop(
    listener: TcpListener,
    events: mpsc::UnboundedSender<Event>,
    local: SocketAddr,
    transport: Transport,
) {
    // Client ids count up from 1 (the scheduler reserves the largest for itself).
    let mut next_worker: u32 = 0;
    let mut next_client: u32 = 1;
    let admission = comm::Admission::new(comm::limits().max_unregistered);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if events.is_closed() {
            return;
        }
        let worker_id = WorkerId::new(next_worker);
        let client_id = ClientId::new(next_client);
        let events = events.clone();
        // Ids are handed out per accepted connection; gaps are harmless.
        next_worker += 1;
        next_client += 1;
        // Counted from accept to registration, so strangers cannot pile up.
        let stranger = admission.admit();
        let transport = transport.clone();
        tokio::spawn(async move {
            let listener_name = format!("the kiln scheduler at {local}");
            let joined = stranger
                .register(
                    comm::limits().register_timeout,
                    register(stream, peer, worker_id, &listener_name, &transport),
                )
                .await;
            match joined {
                Ok(Joined::Worker { info, rest, reader, write }) => {
                    serve_worker(worker_id, info, rest, reader, write, events).await
                }
                Ok(Joined::Client { name, rest, mut reader, write }) => {
                    let tx = comm::spawn_writer::<SchedulerToClient>(write, name.clone());
                    let _ = events.send(Event::ClientJoined(client_id, tx));
                    tracing::info!("client {client_id} connected from {peer} ({name})");
                    if !rest.is_empty() {
                        let _ = events.send(Event::Client(client_id, rest));
                    }
                    loop {
                        match reader.next_messages::<ClientToScheduler>().await {
                            Ok(Some((messages, _))) => {
                                let _ = events.send(Event::Client(client_id, messages));
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!("client {client_id}: {e}; dropping the connection");
                                break;
                            }
                        }
                    }
                    tracing::info!("client {client_id} disconnected");
                    let _ = events.send(Event::ClientLost(client_id));
                }
                Err(e) => tracing::warn!("dropped connection from {peer}: {e}"),
            }
        });
    }
}

/// A connection that completed the handshake and registered.
enum Joined {
    Worker { info: WorkerInfo, rest: Vec<WorkerToScheduler>, reader: PacketReader, write: WriteHalf },
    Client { name: String, rest: Vec<ClientToScheduler>, reader: PacketReader, write: WriteHalf },
}

/// The handshake and the first message, which must register the worker or client. Until it
/// has arrived the peer is a stranger: it may send only small frames.
async fn register(
    stream: TcpStream,
    peer: SocketAddr,
    id: WorkerId,
    listener: &str,
    transport: &Transport,
) -> Result<Joined, CommError> {
    let (stream, hello, leftover) = comm::accept(stream, transport, &[Role::Client, Role::Worker], listener).await?;
    let (read, write) = stream.into_split();
    let who = format!("{} ({peer})", hello.name);
    let mut reader = PacketReader::stranger(read, who.clone(), leftover);
    let unexpected = |message: String| CommError::Unexpected { peer: who.clone(), message };
    let joined = match hello.role {
        Role::Worker => {
            let mut messages = match reader.next_messages::<WorkerToScheduler>().await? {
                Some((messages, _)) if !messages.is_empty() => messages,
                _ => return Err(CommError::Closed(who)),
            };
            let info = match messages.remove(0) {
                WorkerToScheduler::Register { address, name, nthreads, memory_limit, write_token } => {
                    // A worker listening on all interfaces is reached at the address it connected
                    // from (its scheme, `tls://` for a TLS data port, is kept).
                    let (scheme, host_port) = address.split_once("://").map_or(("", address.as_str()), |(s, a)| (s, a));
                    let address = match host_port.parse::<SocketAddr>() {
                        Ok(a) if a.ip().is_unspecified() => {
                            let reachable = SocketAddr::new(peer.ip(), a.port());
                            if scheme.is_empty() { reachable.to_string() } else { format!("{scheme}://{reachable}") }
                        }
                        _ => address,
                    };
                    WorkerInfo { id, address, name, nthreads: nthreads.max(1), memory_limit, write_token }
                }
                other => return Err(unexpected(format!("worker sent {} before registering", variant(&other)))),
            };
            reader.trust();
            Joined::Worker { info, rest: messages, reader, write }
        }
        Role::Client => {
            let mut messages = match reader.next_messages::<ClientToScheduler>().await? {
                Some((messages, _)) if !messages.is_empty() => messages,
                _ => return Err(CommError::Closed(who)),
            };
            let name = match messages.remove(0) {
                ClientToScheduler::Register { name } => name,
                other => return Err(unexpected(format!("client sent {} before registering", variant(&other)))),
            };
            reader.trust();
            Joined::Client { name, rest: messages, reader, write }
        }
        Role::Peer => return Err(unexpected("the Peer role is not served here".into())),
    };
    Ok(joined)
}

/// A message's variant name, for a log line (not its possibly large contents).
fn variant(message: &impl std::fmt::Debug) -> String {
    let text = format!("{message:?}");
    text.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or_default().to_string()
}

async fn serve_worker(
    id: WorkerId,
    info: WorkerInfo,
    rest: Vec<WorkerToScheduler>,
    mut reader: PacketReader,
    write: WriteHalf,
    events: mpsc::UnboundedSender<Event>,
) {
    tracing::info!("worker {id} registered: {} at {} with {} threads", info.name, info.address, info.nthreads);
    let tx = comm::spawn_writer::<SchedulerToWorker>(write, info.name.clone());
    let (kick, mut kicked) = oneshot::channel();
    let _ = events.send(Event::WorkerJoined { id, info, tx, kick });
    if !rest.is_empty() {
        let _ = events.send(Event::Worker(id, rest));
    }
    let reason = loop {
        tokio::select! {
            read = reader.next_messages::<WorkerToScheduler>() => match read {
                Ok(Some((messages, _))) => {
                    let _ = events.send(Event::Worker(id, messages));
                }
                Ok(None) => break "connection closed".to_string(),
                Err(e) => break e.to_string(),
            },
            // Declared dead (missed heartbeats): close the connection so that the worker, if
            // it is alive after all, notices and rejoins as a new worker.
            _ = &mut kicked => return,
        }
    };
    let _ = events.send(Event::WorkerLost(id, reason));
}

async fn core(
    mut events: mpsc::UnboundedReceiver<Event>,
    self_tx: mpsc::UnboundedSender<Event>,
    config: ServerConfig,
    done: watch::Sender<bool>,
    mut dash: Option<DashboardSide>,
) {
    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    let mut state = SchedulerState::new(config.policy.clone());
    let mut observed = Vec::new();
    // An observer gets every event; a dashboard alone needs much less (see
    // `DashboardSide::level`), re-checked after each turn as pages open and close.
    let level_for = |dash: &Option<DashboardSide>| match (&config.observer, dash) {
        (Some(_), _) => ObserveLevel::Everything,
        (None, Some(side)) => side.level(),
        (None, None) => ObserveLevel::Off,
    };
    state.observe_level(level_for(&dash));
    let dashboard_link = dash.as_ref().map(DashboardSide::link);
    let mut workers: HashMap<WorkerId, Sender<SchedulerToWorker>> = HashMap::new();
    let mut kicks: HashMap<WorkerId, oneshot::Sender<()>> = HashMap::new();
    let mut clients: HashMap<ClientId, Sender<SchedulerToClient>> = HashMap::new();
    let mut commands = Vec::new();
    let mut batch = Vec::new();
    // Balancing runs every tick; heartbeat checks every tenth.
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut ticks: u64 = 0;
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping: Option<String> = None;
    loop {
        let mut request = None;
        tokio::select! {
            r = DashboardSide::next_request(&mut dash) => request = r,
            n = events.recv_many(&mut batch, 1024) => {
                if n == 0 {
                    break;
                }
            }
            _ = ticker.tick() => {
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    let deadline = now().saturating_sub(config.worker_timeout.as_millis() as u64);
                    for id in state.silent_workers(deadline) {
                        tracing::warn!("worker {id} missed its heartbeats; removing it");
                        workers.remove(&id);
                        if let Some(kick) = kicks.remove(&id) {
                            let _ = kick.send(());
                        }
                        state.handle(StateEvent::WorkerLost { worker: id, reason: "missed heartbeats".into() }, now());
                    }
                }
                state.handle(StateEvent::Tick, now());
            }
        }
        let turn = Instant::now();
        if let (Some(side), Some(request)) = (&mut dash, request) {
            side.answer(request, &mut state, clients.len());
        }
        for event in batch.drain(..) {
            let t = now();
            match event {
                Event::WorkerJoined { id, info, tx, kick } => {
                    workers.insert(id, tx);
                    kicks.insert(id, kick);
                    state.handle(StateEvent::WorkerJoined(info), t);
                }
                Event::Worker(id, messages) => {
                    for m in messages {
                        if let WorkerToScheduler::Paused { paused, reason } = &m {
                            if *paused {
                                tracing::warn!("worker {id} paused: {reason}; it gets no new tasks");
                            } else {
                                tracing::info!("worker {id} resumed");
                            }
                        }
                        state.handle(StateEvent::Worker(id, m), t);
                    }
                }
                Event::WorkerLost(id, reason) => {
                    kicks.remove(&id);
                    if workers.remove(&id).is_some() {
                        tracing::warn!("worker {id} lost: {reason}");
                        state.handle(StateEvent::WorkerLost { worker: id, reason }, t);
                    }
                }
                Event::ClientJoined(id, tx) => {
                    clients.insert(id, tx);
                    state.handle(StateEvent::ClientJoined(id), t);
                }
                Event::Client(id, messages) => {
                    for m in messages {
                        if matches!(m, ClientToScheduler::ShutdownCluster) {
                            stopping = Some(format!("client {id} shut the cluster down"));
                        }
                        state.handle(StateEvent::Client(id, m), t);
                    }
                }
                Event::ClientLost(id) => {
                    clients.remove(&id);
                    state.handle(StateEvent::ClientLost(id), t);
                }
                Event::Stop(reason) => {
                    for &w in workers.keys() {
                        commands.push(Command::Worker(w, SchedulerToWorker::Close { reason: reason.clone() }));
                    }
                    for &c in clients.keys() {
                        commands.push(Command::Client(c, SchedulerToClient::Shutdown { reason: reason.clone() }));
                    }
                    stopping = Some(reason);
                }
            }
        }
        state.drain_commands_into(&mut commands);
        if let Some(side) = &mut dash {
            state.drain_observations_into(&mut observed);
            side.apply(&observed);
            side.after_turn(&state, clients.len(), turn.elapsed());
        }
        let level = level_for(&dash);
        if level != state.observed_level() {
            state.observe_level(level);
        }
        if let Some(observer) = &config.observer {
            state.drain_observations_into(&mut observed);
            for event in observed.drain(..) {
                // An observer that went away stops nothing: the scheduler carries on.
                let _ = observer.send(event);
            }
        }
        observed.clear();
        for mut command in commands.drain(..) {
            if let (Command::Client(_, SchedulerToClient::Welcome { dashboard, .. }), Some(link)) =
                (&mut command, &dashboard_link)
            {
                *dashboard = Some(link.clone());
            }
            match command {
                Command::Worker(w, m) => {
                    if let Some(tx) = workers.get(&w) {
                        let _ = tx.send(Outgoing::Message(m));
                    }
                }
                Command::Client(c, m) => {
                    if let Some(tx) = clients.get(&c) {
                        let _ = tx.send(Outgoing::Message(m));
                    }
                }
            }
        }
        if let Some(reason) = stopping.take() {
            tracing::info!("scheduler stopping: {reason}");
            // Dropping the senders lets each writer flush what is queued and close.
            workers.clear();
            clients.clear();
            drop(self_tx);
            // Give writers a moment to flush their last messages.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = done.send(true);
            return;
        }
    }
    let _ = done.send(true);
}
