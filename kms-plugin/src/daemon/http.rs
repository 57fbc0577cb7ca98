//! The operator's HTTP endpoint: `/livez` (the process serves), `/healthz`
//! (the backend really wraps and unwraps) and `/metrics` (Prometheus).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::daemon::health::{HEALTHY, Health};
use crate::daemon::metrics::Metrics;

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// The router, for serving and for tests.
pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/healthz", get(healthz))
        .route("/readyz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics })
}

async fn livez(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    let v = s.health.healthz().await;
    let code = if &*v == HEALTHY {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{v}\n"))
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    use zeroize::Zeroizing;

    use super::*;
    use crate::backend::{BackendError, KeyBackend, Refresh, Wrapped};

    /// A backend whose worker thread can be "dead".
    struct Stub {
        dead: AtomicBool,
    }

    #[async_trait::async_trait]
    impl KeyBackend for Stub {
        fn kind(&self) -> &'static str {
            "stub"
        }
        fn is_hardware_backed(&self) -> bool {
            false
        }
        fn active_key_id(&self) -> Result<Arc<str>, BackendError> {
            Ok("k".into())
        }
        fn max_plaintext(&self) -> usize {
            64
        }
        async fn encrypt(&self, p: &[u8]) -> Result<Wrapped, BackendError> {
            Ok(Wrapped {
                key_id: "k".into(),
                ciphertext: p.to_vec(),
            })
        }
        async fn decrypt(&self, _: &str, c: &[u8]) -> Result<Zeroizing<Vec<u8>>, BackendError> {
            Ok(Zeroizing::new(c.to_vec()))
        }
        async fn refresh(&self) -> Result<Refresh, BackendError> {
            Ok(Refresh {
                active: "k".into(),
                changed: false,
            })
        }
        fn liveness(&self) -> Result<(), String> {
            if self.dead.load(Ordering::SeqCst) {
                Err("the worker thread died".into())
            } else {
                Ok(())
            }
        }
    }

    async fn get(r: &Router, path: &str) -> (StatusCode, String) {
        let resp = r
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let code = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn livez_fails_while_a_backend_thread_is_dead() {
        let stub = Arc::new(Stub {
            dead: AtomicBool::new(false),
        });
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new(
            stub.clone(),
            metrics.clone(),
            Duration::from_secs(1),
        ));
        let r = router(health, metrics);
        assert_eq!(get(&r, "/livez").await, (StatusCode::OK, "ok\n".into()));
        assert_eq!(get(&r, "/healthz").await.0, StatusCode::OK);
        stub.dead.store(true, Ordering::SeqCst);
        let (code, body) = get(&r, "/livez").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("died"), "{body}");
        stub.dead.store(false, Ordering::SeqCst);
        assert_eq!(get(&r, "/livez").await.0, StatusCode::OK);
    }
}
