//! `kms-plugin serve`: validate everything, bind, serve, pick up rotations,
//! drain on SIGTERM/SIGINT, remove the socket.

use std::sync::Arc;
use std::time::Duration;

use kms_proto::v2::key_management_service_server::KeyManagementServiceServer;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

use crate::backend::KeyBackend;
use crate::backend::registry;
use crate::daemon::config::ServeConfig;
use crate::daemon::health::Health;
use crate::daemon::listener;
use crate::daemon::metrics::Metrics;
use crate::daemon::service::KmsService;
use kms_proto::contract::MAX_REQUEST_BYTES;

/// Everything `serve` needs, prepared before the runtime starts.
pub struct Prepared {
    cfg: ServeConfig,
    backend: Arc<dyn KeyBackend>,
    socket: listener::BoundSocket,
    health_listener: Option<HealthListener>,
}

/// The health port: bound at start-up, or the address to keep trying.
enum HealthListener {
    Bound(std::net::TcpListener),
    Retry(std::net::SocketAddr, std::io::Error),
}

/// How often a health port that could not be bound is tried again.
const HEALTH_RETRY: Duration = Duration::from_secs(2);

fn bind_health(a: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(a)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Opens the backend, then binds the health port and the socket, so a bad
/// key ring fails before the socket exists. A health port that cannot be
/// bound (another process took it) does not keep the plugin down: it is a
/// warning, counted, and tried again while serving.
pub fn prepare(cfg: ServeConfig) -> anyhow::Result<Prepared> {
    kms_proto::process::private_umask();
    if let Err(e) = kms_proto::process::disable_core_dumps() {
        tracing::warn!(error = %e, "could not disable core dumps");
    }
    let backend = registry::open(cfg.backend, cfg.keyring.as_deref(), &cfg.connect)?;
    let health_listener = cfg.health_addr.map(|a| match bind_health(a) {
        Ok(l) => HealthListener::Bound(l),
        Err(e) => HealthListener::Retry(a, e),
    });
    let socket = listener::bind(&cfg.listen, cfg.socket_gid)?;
    Ok(Prepared {
        cfg,
        backend,
        socket,
        health_listener,
    })
}

/// Rewrites tonic's "message too large" (OUT_OF_RANGE, from decoding before
/// our handler runs) into INVALID_ARGUMENT, the code every other bad input
/// gets. Our handlers never return OUT_OF_RANGE themselves.
fn oversized_is_invalid_argument<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let h = resp.headers_mut();
    if h.get("grpc-status").is_some_and(|v| v == "11") {
        h.insert("grpc-status", http::HeaderValue::from_static("3"));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static("request%20exceeds%20the%2064%20KiB%20limit"),
        );
    }
    resp
}

/// Serves `/livez`, `/healthz` and `/metrics`; binds the port first when it
/// could not be bound at start-up, retrying until it can (or shutdown).
async fn serve_health(
    l: HealthListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) {
    let l = match l {
        HealthListener::Bound(l) => l,
        HealthListener::Retry(addr, first) => {
            metrics.health_listen_failed();
            tracing::warn!(%addr, error = %first, retry = ?HEALTH_RETRY, "health-addr cannot be bound (another process has the port?); serving KMS without it and trying again");
            let mut last = first.to_string();
            loop {
                tokio::select! {
                    _ = stop.recv() => return,
                    _ = tokio::time::sleep(HEALTH_RETRY) => {}
                }
                match bind_health(addr) {
                    Ok(l) => break l,
                    Err(e) => {
                        metrics.health_listen_failed();
                        if e.to_string() != last {
                            tracing::warn!(%addr, error = %e, "health-addr still cannot be bound");
                            last = e.to_string();
                        }
                    }
                }
            }
        }
    };
    let l = match tokio::net::TcpListener::from_std(l) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "health endpoint failed");
            return;
        }
    };
    if let Ok(addr) = l.local_addr() {
        tracing::info!(%addr, "serving /healthz, /livez and /metrics");
    }
    if let Err(e) = crate::daemon::http::serve(l, health, metrics, async move {
        let _ = stop.recv().await;
    })
    .await
    {
        tracing::error!(error = %e, "health endpoint failed");
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

async fn reload_loop(
    backend: Arc<dyn KeyBackend>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        tick.tick().await;
        // A backend thread that died is started again here; `/livez` fails
        // until then, and for good when it keeps dying.
        if backend.liveness().is_err() {
            for _ in 0..backend.revive() {
                metrics.worker_restarted();
            }
        }
        match backend.refresh().await {
            Ok(r) => {
                last_error = None;
                if r.changed {
                    health.invalidate();
                    metrics.set_active_key(&r.active, backend.kind());
                    if let Some(info) = backend.ring_info() {
                        metrics.set_ring(&info, backend.kind());
                        tracing::info!(kms.key_id = %r.active, ring.fingerprint = %info.fingerprint, ring.staged = info.staged, "key ring reloaded");
                    } else {
                        tracing::info!(kms.key_id = %r.active, "key ring reloaded");
                    }
                }
            }
            Err(e) => {
                let refused = matches!(
                    e,
                    crate::backend::BackendError::Keyring(
                        crate::keyring::KeyringError::Regressed { .. }
                    )
                );
                if refused {
                    metrics.ring_refused();
                } else {
                    metrics.backend_error("reload");
                }
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    if refused {
                        tracing::error!(error = %msg, "key ring file refused; still serving with every key loaded before");
                    } else {
                        tracing::error!(error = %msg, "key ring reload failed; still serving with the keys loaded before");
                    }
                    last_error = Some(msg);
                }
            }
        }
    }
}

/// Runs the prepared server until a signal, then drains and cleans up.
pub async fn run(p: Prepared) -> anyhow::Result<()> {
    let Prepared {
        cfg,
        backend,
        socket,
        health_listener,
    } = p;
    let mut metrics = Metrics::new();
    if let Some(calls) = backend.service_calls() {
        metrics.register_backend_calls(calls);
    }
    let metrics = Arc::new(metrics);
    let health = Arc::new(Health::new(
        backend.clone(),
        metrics.clone(),
        cfg.health_cache,
    ));
    let active = backend.active_key_id()?;
    metrics.set_active_key(&active, backend.kind());
    if let Some(info) = backend.ring_info() {
        metrics.set_ring(&info, backend.kind());
    }

    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);

    let http_task = health_listener.map(|l| {
        let (h, m) = (health.clone(), metrics.clone());
        let rx = stop_tx.subscribe();
        tokio::spawn(serve_health(l, h, m, rx))
    });

    let reload = tokio::spawn(reload_loop(
        backend.clone(),
        health.clone(),
        metrics.clone(),
        cfg.reload_interval,
    ));

    let service = KmsService::new(backend.clone(), health.clone(), metrics.clone());
    let svc = KeyManagementServiceServer::new(service)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES);
    let std_listener = socket.listener.try_clone()?;
    // Every connection's requests reach the HTTP/2 server with an
    // authority it accepts, whatever the client sent (see `authority`).
    let incoming = UnixListenerStream::new(tokio::net::UnixListener::from_std(std_listener)?)
        .map(|c| c.map(crate::daemon::authority::NormalizedStream::new));
    let mut rx = stop_tx.subscribe();
    let grpc = Server::builder()
        .timeout(cfg.timeout)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            cfg.max_in_flight,
        ))
        .layer(tower::util::MapResponseLayer::new(
            oversized_is_invalid_argument,
        ))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = rx.recv().await;
        });
    let mut grpc = tokio::spawn(grpc);

    let ring = backend.ring_info();
    tracing::info!(
        endpoint = %cfg.listen,
        backend = backend.kind(),
        hardware_backed = backend.is_hardware_backed(),
        kms.key_id = %active,
        ring.fingerprint = ring.as_ref().map(|r| r.fingerprint.as_str()).unwrap_or("-"),
        ring.staged = ring.as_ref().map(|r| r.staged).unwrap_or(0),
        "kms-plugin serving KMS v2"
    );

    let sig = tokio::select! {
        s = shutdown_signal() => s,
        r = &mut grpc => {
            socket.cleanup();
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::anyhow!("gRPC server failed: {e}")),
                Err(e) => Err(anyhow::anyhow!("gRPC server task failed: {e}")),
            };
        }
    };
    tracing::info!(signal = sig, grace = ?cfg.shutdown_grace, "shutting down: no new connections, draining in-flight calls");
    // Stop accepting first: the socket file goes away so no new client finds it.
    socket.cleanup();
    let _ = stop_tx.send(());
    reload.abort();
    match tokio::time::timeout(cfg.shutdown_grace, &mut grpc).await {
        Ok(_) => tracing::info!("drained; bye"),
        Err(_) => {
            tracing::warn!("grace period over with calls still in flight; exiting");
            grpc.abort();
        }
    }
    if let Some(h) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), h).await;
    }
    Ok(())
}
