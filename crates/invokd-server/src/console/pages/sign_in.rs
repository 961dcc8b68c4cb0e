//! Signing in with an access key or the admin token, and out again.

use askama::Template;
use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use invokd_core::keys::KeyHash;

use super::{prefix, see_other};
use crate::{
    console::{ConsoleError, Posted, cross_site, form_pairs, render, session},
    state::AppState,
};

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignIn {
    prefix: String,
    error: Option<&'static str>,
}

pub async fn form(State(state): State<AppState>) -> Result<Response, ConsoleError> {
    render(&SignIn {
        prefix: prefix(&state),
        error: None,
    })
}

/// A wrong key gets the same words whether it names nothing, a revoked key or a typo, and
/// nothing is written.
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    if cross_site(&headers) {
        return Err(ConsoleError::new(
            StatusCode::FORBIDDEN,
            "Sign in from the console's own page.",
        ));
    }
    let fields = form_pairs(&body);
    let secret = fields
        .iter()
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.trim())
        .unwrap_or_default();
    let hash = KeyHash::of(secret);
    let kind = if secret.is_empty() {
        None
    } else if hash == state.admin_token {
        Some('a')
    } else if state.service.authenticate(secret).await.is_ok() {
        Some('k')
    } else {
        None
    };
    let Some(kind) = kind else {
        let page = SignIn {
            prefix: prefix(&state),
            error: Some("That key is not valid. Check it and try again."),
        };
        return Ok((StatusCode::UNAUTHORIZED, render(&page)?).into_response());
    };
    let cookie = session::issue(&state.signer, (kind, &hash));
    let mut res = see_other(&format!("{}/overview", prefix(&state)));
    res.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie(&state, Some(&cookie)),
    );
    Ok(res)
}

pub async fn sign_out(State(state): State<AppState>, _: Posted) -> Response {
    let mut res = see_other(&format!("{}/sign-in", prefix(&state)));
    res.headers_mut()
        .insert(header::SET_COOKIE, session::set_cookie(&state, None));
    res
}
