//! Console sessions: a signed cookie naming who signed in (an access key's hash, or the admin
//! token's), checked again on every request so a revoked key ends its sessions; and the CSRF
//! token every action carries.
//!
//! The cookie holds no secret a client could use on the API, and no state is kept on the
//! server, so any replica sharing the signing secret serves any session.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use chrono::Utc;
use invokd_core::{keys::KeyHash, service::Caller, signing::UrlSigner};

use crate::state::AppState;

pub const COOKIE: &str = "invokd_console";
/// How long a sign-in lasts.
pub const LIFETIME_SECS: i64 = 12 * 3600;
/// The form field and the header that carry the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who is signed in.
#[derive(Debug, Clone)]
pub enum Who {
    /// An access key: its own project only.
    Key(Caller),
    /// The admin token: every project, and the admin pages.
    Admin,
}

/// A signed-in request: who, and the CSRF token of the session for the page's forms.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub who: Who,
    pub csrf: String,
}

impl Viewer {
    pub fn is_admin(&self) -> bool {
        matches!(self.who, Who::Admin)
    }
}

/// What the cookie's signature covers. The leading NUL keeps it apart from every file key the
/// same secret signs.
fn signed_part(kind: char, hash: &str) -> String {
    format!("\0console\n{kind}.{hash}")
}

/// The cookie value of a new session: `kind.hash.expires.signature`.
pub fn issue(signer: &UrlSigner, who_hash: (char, &KeyHash)) -> String {
    let (kind, hash) = who_hash;
    let expires = Utc::now().timestamp() + LIFETIME_SECS;
    let sig = signer.sign(&signed_part(kind, &hash.0), expires);
    format!("{kind}.{}.{expires}.{sig}", hash.0)
}

/// The session's CSRF token: bound to its cookie, so it is worthless to another session.
pub fn csrf_of(signer: &UrlSigner, cookie: &str) -> String {
    signer.sign(&format!("\0csrf\n{cookie}"), 0)
}

/// Whether `token` is the CSRF token of the session `cookie` (compared in constant time).
pub fn csrf_ok(signer: &UrlSigner, cookie: &str, token: &str) -> bool {
    signer.verify(&format!("\0csrf\n{cookie}"), 0, token, 0)
}

/// The console cookie of a request, if it has one.
pub fn cookie_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The kind and hash a cookie names, if its signature holds and it has not expired.
fn verify(signer: &UrlSigner, cookie: &str) -> Option<(char, KeyHash)> {
    let mut parts = cookie.splitn(4, '.');
    let kind = parts.next()?;
    let hash = parts.next()?;
    let expires = parts.next()?.parse::<i64>().ok()?;
    let sig = parts.next()?;
    let kind = match kind {
        "k" => 'k',
        "a" => 'a',
        _ => return None,
    };
    signer
        .verify(
            &signed_part(kind, hash),
            expires,
            sig,
            Utc::now().timestamp(),
        )
        .then(|| (kind, KeyHash(hash.to_owned())))
}

/// The `Set-Cookie` header of a session (`value`), or of its removal (`None`).
pub fn set_cookie(state: &AppState, value: Option<&str>) -> HeaderValue {
    let path = state.config.console_path.as_deref().unwrap_or("/");
    cookie_header(path, state.config.tls.is_some(), value)
}

/// The cookie for the console at `path`: `Secure` when served over TLS.
fn cookie_header(path: &str, tls: bool, value: Option<&str>) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let text = match value {
        Some(v) => format!(
            "{COOKIE}={v}; Path={path}; Max-Age={LIFETIME_SECS}; HttpOnly; SameSite=Strict{secure}"
        ),
        None => format!("{COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
    };
    // Every part is ASCII: the value is hex, digits and dots, the path checked at start.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Who a valid cookie signs in, checked against the keys as they are now.
pub async fn who(state: &AppState, cookie: &str) -> Option<Who> {
    let (kind, hash) = verify(&state.signer, cookie)?;
    match kind {
        'a' => (hash == state.admin_token).then_some(Who::Admin),
        _ => state
            .service
            .authenticate_hash(hash)
            .await
            .ok()
            .map(Who::Key),
    }
}

/// No session: pages send the browser to the sign-in page; htmx's requests (which would follow
/// a redirect and swap the sign-in page into a fragment) are told to send the page there.
pub struct SignInFirst {
    to: String,
    htmx: bool,
}

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        if !self.htmx {
            return Redirect::to(&self.to).into_response();
        }
        let mut res = axum::http::StatusCode::UNAUTHORIZED.into_response();
        if let Ok(v) = HeaderValue::from_str(&self.to) {
            res.headers_mut().insert("hx-redirect", v);
        }
        res
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = SignInFirst;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let prefix = state.config.console_path.as_deref().unwrap_or_default();
        let sign_in = || SignInFirst {
            to: format!("{prefix}/sign-in"),
            htmx: parts.headers.contains_key("hx-request"),
        };
        let cookie = cookie_of(&parts.headers).ok_or_else(sign_in)?;
        let who = who(state, cookie).await.ok_or_else(sign_in)?;
        Ok(Viewer {
            who,
            csrf: csrf_of(&state.signer, cookie),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_verify_only_as_signed() {
        let s = UrlSigner::new(b"k".to_vec());
        let hash = KeyHash::of("secret");
        let c = issue(&s, ('k', &hash));
        assert_eq!(verify(&s, &c), Some(('k', hash.clone())));
        assert_eq!(verify(&UrlSigner::new(b"other".to_vec()), &c), None);
        let admin = c.replacen('k', "a", 1);
        assert_eq!(verify(&s, &admin), None, "the kind is signed");
        let mut parts: Vec<&str> = c.split('.').collect();
        let later = (Utc::now().timestamp() + 10 * LIFETIME_SECS).to_string();
        parts[2] = &later;
        assert_eq!(verify(&s, &parts.join(".")), None, "the expiry is signed");
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_under_tls() {
        let c = cookie_header("/console", true, Some("v"));
        assert_eq!(
            c,
            "invokd_console=v; Path=/console; Max-Age=43200; HttpOnly; SameSite=Strict; Secure"
        );
        let plain = cookie_header("/ops/x", false, None);
        assert_eq!(
            plain,
            "invokd_console=; Path=/ops/x; Max-Age=0; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let s = UrlSigner::new(b"k".to_vec());
        let a = issue(&s, ('k', &KeyHash::of("a")));
        let b = issue(&s, ('k', &KeyHash::of("b")));
        assert!(csrf_ok(&s, &a, &csrf_of(&s, &a)));
        assert!(!csrf_ok(&s, &a, &csrf_of(&s, &b)));
        assert!(!csrf_ok(&s, &a, ""));
    }
}
