//! `/console`: a small page where a user pastes (or receives) a token and sees their session's
//! status, the live QR and recent messages. Static HTML, JS and CSS compiled into the binary, no
//! build step; it talks to the same public routes and WebSocket a CRM uses. The page holds no
//! data of its own, so it is served without a token; everything it shows comes from calls made
//! with the user's token.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const PAGE: &str = include_str!("../assets/console.html");
const SCRIPT: &str = include_str!("../assets/console.js");
const STYLE: &str = include_str!("../assets/console.css");

/// Paths of the page and its assets (the page refers to the assets relative to itself).
pub const PAGE_PATH: &str = "/console";
pub const SCRIPT_PATH: &str = "/console/app.js";
pub const STYLE_PATH: &str = "/console/app.css";

/// Scripts and styles only from this origin (no inline code, no CDN); calls and the WebSocket
/// only to this origin; images also from `data:` (the QR code); never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The page and its assets, for any router state: merge into the public router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PAGE_PATH, get(page))
        .route(SCRIPT_PATH, get(script))
        .route(STYLE_PATH, get(style))
}

pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Revalidated on every load, so a new release's page never runs an old script.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_assets_from_the_served_paths() {
        // Relative to `/console`, `console/app.js` is `/console/app.js`.
        for path in [SCRIPT_PATH, STYLE_PATH] {
            let relative = path.trim_start_matches('/');
            assert!(PAGE.contains(&format!("\"{relative}\"")), "{path}");
        }
    }

    #[test]
    fn the_page_has_no_inline_code_and_no_remote_resources() {
        // The CSP allows neither; a slip would only show as a blank page in a browser.
        for needle in [
            "<script>", "<style", " style=", "onclick", "http://", "https://",
        ] {
            assert!(!PAGE.contains(needle), "console.html contains {needle}");
        }
        for needle in ["http://", "https://", "console.log", "innerHTML"] {
            assert!(!SCRIPT.contains(needle), "console.js contains {needle}");
        }
    }
}
