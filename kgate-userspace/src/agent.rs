//! `kgate agent`: attaches the kernel programs, then serves the connections they redirect.
//!
//! Start-up order matters for fail-closed enforcement: the agent exempts its own cgroup
//! before anything else, so its upstream connections never loop back to itself, and it
//! sets the redirect address before the targets, so no target is ever live without
//! somewhere to go.
//!
//! Each accepted connection then goes through the request path in [`crate::proxy`].

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use kgate_common::TargetKind;
use tokio::{net::TcpListener, sync::watch};
use tracing::{error, info, warn};

use crate::{
    api_endpoints::Discovered,
    approval::{
        Approvals,
        notify::{Notifier, TargetError},
    },
    cgroup::{self, CgroupError},
    config::{CgroupSetting, Config, ConfigError},
    ebpf::{self, AttachOptions, EbpfError, Enforcement, Programmed},
    identity::{
        Identifier,
        oidc::{Authenticators, FetchError},
    },
    kube::apiclient::{self, ApiClientError},
    mask::{MaskConfigError, Masker},
    metrics::Metrics,
    policy::{file::FileError, store::PolicyStore},
    proxy::{
        Proxy,
        accept::CgroupNames,
        dial::Endpoints,
        forward::{ForwardError, Upstream},
        tls::{ServingCert, TlsError},
        workers::Workers,
    },
    record::{RecordError, Recorder},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
    #[error("cannot find the agent's own cgroup: {0}")]
    OwnCgroupFailed(#[source] io::Error),
    #[error("exempt cgroup {0}: {1}")]
    ExemptCgroupFailed(PathBuf, #[source] io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("serving certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("upstream: {0}")]
    Upstream(#[from] ForwardError),
    #[error("OIDC authenticator: {0}")]
    Oidc(#[from] FetchError),
    #[error(transparent)]
    ApiClient(#[from] ApiClientError),
    #[error("policy: {0}")]
    Policy(#[from] FileError),
    #[error(transparent)]
    Mask(#[from] MaskConfigError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Notify(#[from] TargetError),
    #[error("cannot start the worker threads: {0}")]
    WorkersFailed(#[source] io::Error),
    #[error("cannot listen on {0}: {1}")]
    ListenFailed(SocketAddr, #[source] io::Error),
}

/// Runs the agent until SIGINT or SIGTERM. The kernel programs stay attached on exit.
pub(crate) async fn run(config: Config, debug_logs: bool) -> Result<(), AgentError> {
    raise_open_files_limit();
    // Everything that can be wrong with the inputs is found before the kernel programs
    // are attached, so bad input leaves nothing behind.
    let serving = ServingCert::load(&config.tls.cert_file, &config.tls.key_file)?;
    let endpoints = Endpoints::default();
    let base = config.upstream_uri()?;
    let upstreams = (0..config.worker_count())
        .map(|_| Upstream::new(&config.upstream, base.clone(), &endpoints))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = Arc::new(PolicyStore::new(
        &config.policy.files,
        config.policy.default_action,
        config.policy.shadow,
        config.policy.cluster,
    )?);
    let masker = Masker::new(&config.mask)?;
    let recorder = Recorder::new(&config.record)?;
    // Gateway mode: the authenticators' file is read and checked now, with the rest.
    let oidc = Authenticators::new(&config.identity.authenticators()?)?;
    if config.identity.gateway() {
        info!(
            issuers = ?oidc.issuer_urls().collect::<Vec<_>>(),
            "gateway mode: OIDC users are verified here and forwarded as the agent impersonating them; no kernel programs, no pod binding"
        );
    }

    let (enforcement, cgroup_root, attached_to) = if config.kernel {
        let mount = cgroup::cgroup2_mount()?;
        let attach_to = match &config.cgroup {
            CgroupSetting::Auto => cgroup::kubepods_cgroup(&mount)?,
            CgroupSetting::Path(path) => path.clone(),
        };
        let enforcement = enforce(&config, &attach_to, debug_logs)?;
        // The cgroup2 mount that holds the attached cgroup names the clients' cgroups
        // (in a container, the host's tree, not the container's own).
        let names_root = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|info| cgroup::mount_holding(&info, &attach_to))
            .unwrap_or(mount);
        (Some(enforcement), Some(names_root), Some(attach_to))
    } else {
        warn!(
            "kernel programs disabled (`kernel: false`): kgate is a standalone proxy and nothing forces traffic through it"
        );
        (None, cgroup::cgroup2_mount().ok(), None)
    };
    let host = crate::admin::Host::read(cgroup_root.is_some(), attached_to, enforcement.is_some());
    serving.spawn_reloader(Duration::from_secs(config.tls.reload_seconds));
    let client = apiclient::client(&config.upstream, &config.upstream_uri()?)?;
    // Pods exist only where the kernel attributes connections to them.
    let pods = match (&config.identity.node_name, config.kernel) {
        (Some(node), true) => Some(crate::kube::pods::spawn(client.clone(), node)),
        _ => None,
    };
    let node_name = config.identity.node_name.as_deref().unwrap_or("standalone");
    let metrics = Arc::new(Metrics::with_recorder(recorder.stats().clone()));
    let notifier = Notifier::start(&config.approval, Some(&client), node_name, metrics.clone())?;
    let approvals = Approvals::new(client.clone(), node_name).with_notifier(notifier.clone());
    if config.policy.cluster {
        crate::kube::policies::spawn(client.clone(), policy.clone());
    }
    let origins = enforcement.as_ref().map(Enforcement::origins);
    let kernel_counters = enforcement.as_ref().map(Enforcement::counters);
    let enforcing = enforcement.is_some();
    let enforcement = enforcement.map(|e| Arc::new(Mutex::new(e)));
    let programmed = if config.discovery.enabled(config.kernel) {
        let (namespace, name) = config.discovery.service();
        let found = crate::kube::endpoint_discovery::spawn(client.clone(), namespace, name);
        let upstream_endpoints = config.discovery.upstream.then(|| endpoints.clone());
        spawn_target_sync(
            found,
            enforcement.clone(),
            &config.targets,
            upstream_endpoints,
        )
    } else {
        // Only the configured targets, programmed by `enforce`.
        watch::channel(Programmed {
            targets: config.targets.clone(),
            synced: true,
        })
        .1
    };
    let admin_client = client.clone();
    let mut identity = Identifier::new(&config.identity, Some(client), pods).with_oidc(oidc);
    if config.identity.audiences.is_empty() {
        let api = config
            .upstream
            .token_file
            .as_deref()
            .and_then(crate::identity::api_audiences_of_token_file);
        match api {
            Some(audiences) => {
                info!(
                    ?audiences,
                    "service-account tokens must carry the API server's audiences, as the agent's own token names them"
                );
                identity = identity.with_api_audiences(audiences);
            }
            None => info!(
                "the agent's token names no audiences: service-account tokens must carry the issuer as their audience"
            ),
        }
    }
    policy.spawn_file_reloader(Duration::from_secs(config.policy.reload_seconds));
    let proxy = Arc::new(Proxy {
        origins,
        direct_clients: config.direct_clients,
        cgroups: CgroupNames::new(cgroup_root),
        tls: serving.acceptor()?,
        identity: Arc::new(identity),
        policy,
        approvals: Some(approvals),
        masker,
        metrics,
        recorder: Arc::new(recorder),
    });
    let recovering = proxy.clone();
    tokio::spawn(async move {
        if let Some(approvals) = &recovering.approvals {
            approvals.recover().await;
        }
    });
    let node = config.identity.node_name.clone();
    let server = Arc::new(crate::admin::Admin {
        identity: proxy.identity.clone(),
        policy: proxy.policy.clone(),
        recorder: proxy.recorder.clone(),
        metrics: proxy.metrics.clone(),
        client: admin_client.clone(),
        node: config
            .identity
            .node_name
            .clone()
            .unwrap_or_else(|| "standalone".into()),
        enforcing,
        kernel: kernel_counters,
        targets: programmed,
        serving: serving.clone(),
        host,
        record_dir: config.record.dir.clone(),
        // The downward API's names (the DaemonSet sets both): where `kgate sessions`
        // port-forwards to.
        pod: std::env::var("POD_NAMESPACE")
            .ok()
            .zip(std::env::var("POD_NAME").ok())
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty()),
        admin_port: config.admin.as_ref().map(|a| a.listen.port()),
        notifier,
    });
    if let Some(admin) = &config.admin {
        server
            .clone()
            .serve(admin.listen, serving.acceptor()?)
            .await
            .map_err(|e| AgentError::ListenFailed(admin.listen, e))?;
    }
    if config.heartbeat.enabled.unwrap_or(node.is_some()) {
        crate::admin::heartbeat::spawn(
            server,
            admin_client,
            &config.heartbeat.namespace,
            Duration::from_secs(config.heartbeat.interval_seconds),
        );
    }
    let keys = proxy.clone();
    tokio::spawn(async move { keys.identity.load_keys().await });

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| AgentError::ListenFailed(config.listen, e))?;
    let count = upstreams.len();
    let workers = Workers::start(&proxy, upstreams).map_err(AgentError::WorkersFailed)?;
    info!(
        listen = %config.listen, upstream = %config.upstream.server, workers = count,
        "agent listening"
    );

    let serve = async {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => workers.dispatch(stream, peer),
                // Running out of fds must not kill the agent: log and keep accepting.
                Err(error) => warn!(%error, "accept failed"),
            }
        }
    };
    tokio::select! {
        () = serve => {}
        () = shutdown_signal() => info!("shutting down; kernel programs stay attached (fail closed)"),
    }
    drop(enforcement);
    Ok(())
}

/// Attaches (or re-uses) the kernel programs at `attach_to` and fills their maps from
/// the config.
fn enforce(config: &Config, attach_to: &Path, debug_logs: bool) -> Result<Enforcement, AgentError> {
    let mut enforcement = ebpf::attach(&AttachOptions {
        cgroup: attach_to.to_owned(),
        bpffs: config.bpffs.clone(),
        debug_logs,
    })?;
    enforcement.spawn_log_forwarder();

    // The agent's own cgroup first: its upstream connections must never loop back.
    let own = cgroup::own_cgroup().map_err(AgentError::OwnCgroupFailed)?;
    for dir in std::iter::once(&own).chain(&config.exempt_cgroups) {
        let id =
            cgroup::cgroup_id(dir).map_err(|e| AgentError::ExemptCgroupFailed(dir.clone(), e))?;
        enforcement.exempt(id)?;
        info!(cgroup = %dir.display(), id, "exempt from redirection");
    }
    // Somewhere to go before anything is intercepted.
    let redirect = config.redirect_to();
    enforcement.set_redirect(redirect)?;
    let targets: Vec<_> = config
        .targets
        .iter()
        .map(|t| (*t, TargetKind::Extra))
        .collect();
    enforcement.sync_targets(&targets)?;
    info!(
        cgroup = %attach_to.display(),
        reused = enforcement.reused(),
        ipv4 = ?redirect.ipv4, ipv6 = ?redirect.ipv6, port = redirect.port,
        targets = ?config.targets,
        "enforcing"
    );
    Ok(enforcement)
}

/// Keeps the kernel's targets (and the upstream's endpoints) equal to what discovery
/// finds, plus the configured targets.
fn spawn_target_sync(
    mut found: watch::Receiver<Discovered>,
    enforcement: Option<Arc<Mutex<Enforcement>>>,
    extra: &[SocketAddr],
    upstream: Option<Endpoints>,
) -> watch::Receiver<Programmed> {
    let (tx, rx) = watch::channel(Programmed {
        targets: extra.to_vec(),
        synced: false,
    });
    let extra = extra.to_vec();
    tokio::spawn(async move {
        while found.changed().await.is_ok() {
            let discovered = found.borrow_and_update().clone();
            let targets = discovered.targets(&extra);
            if let Some(enforcement) = &enforcement {
                let result = enforcement
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .sync_targets(&targets);
                if let Err(error) = result {
                    // The map keeps what it had: a failed sync never drops a target
                    // that was there, and readiness says the set is not current.
                    error!(%error, "cannot program the discovered API endpoints");
                    tx.send_modify(|p| p.synced = false);
                    continue;
                }
            }
            if let Some(upstream) = &upstream {
                upstream.set(discovered.ready_endpoints());
            }
            info!(
                targets = ?targets.iter().map(|(a, _)| a).collect::<Vec<_>>(),
                synced = discovered.synced,
                "kernel targets synced"
            );
            let _ = tx.send(Programmed {
                targets: targets.into_iter().map(|(a, _)| a).collect(),
                synced: discovered.synced,
            });
        }
    });
    rx
}

/// Every client connection is a socket, and so is its upstream: the usual soft limit
/// of 1024 would refuse a node's clients long before memory runs short. Raised to the
/// hard limit, as Go's runtime does for kube-apiserver.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "open files limit raised"),
            Err(error) => warn!(%error, soft, "cannot raise the open files limit"),
        },
        Ok(_) => {}
        Err(error) => warn!(%error, "cannot read the open files limit"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
