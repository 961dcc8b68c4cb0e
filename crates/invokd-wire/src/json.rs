//! JSON request bodies: the content type (415 unless `application/json` in UTF-8), malformed
//! JSON (400: anything but exactly one JSON value, whitespace aside) told apart from JSON of the
//! wrong shape (422, naming the field).

use invokd_api::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Checks a JSON body's `Content-Type`: `application/json` (or a `+json` type), in UTF-8 if a
/// charset is named. A missing type is refused too: the API promises 415 for it, and a body of
/// no declared type is not known to be JSON.
pub fn check_content_type(value: Option<&[u8]>) -> Result<(), ApiError> {
    let Some(value) = value else {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the body must be sent with Content-Type: application/json",
        ));
    };
    let value = String::from_utf8_lossy(value).to_ascii_lowercase();
    let mut params = value.split(';');
    let essence = params.next().unwrap_or_default().trim();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("the body must be application/json, not {essence:?}"),
        ));
    }
    for param in params {
        let Some((name, v)) = param.split_once('=') else {
            continue;
        };
        let charset = v.trim().trim_matches('"');
        if name.trim() == "charset" && charset != "utf-8" && charset != "utf8" {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("a JSON body must be UTF-8, not charset={charset:?}"),
            ));
        }
    }
    Ok(())
}

/// Parses `bytes` as `T`, telling apart malformed JSON (400) from JSON of the wrong shape (422).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "the request body is empty; send a JSON object",
        ));
    }
    // Every body of this API is a JSON object; serde would also read a struct from an array.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
    {
        return Err(ApiError::new(
            ErrorCode::UnprocessableEntity,
            "the body must be a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut *de) {
        // Exactly one value: bytes after it (a second object, a NUL) make the body malformed,
        // never ignored.
        Ok(v) => de.end().map(|()| v).map_err(|e| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("malformed JSON: {e}: the body must be exactly one JSON value"),
            )
        }),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.classify() == serde_json::error::Category::Data {
                let msg = inner.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg);
                let message = if path == "." {
                    msg.to_owned()
                } else {
                    format!("{path}: {msg}")
                };
                Err(ApiError::new(ErrorCode::UnprocessableEntity, message))
            } else {
                Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("malformed JSON: {inner}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    type Object = serde_json::Map<String, serde_json::Value>;

    #[test]
    fn only_one_json_value_is_a_body() {
        assert!(parse_json::<Object>(b" {\"a\": 1}\n\t ").is_ok());
        for body in [
            &b"{\"a\": 1}xyz"[..],
            b"{\"a\": 1}{\"a\": 1}",
            b"{\"a\": 1}\0",
            b"{\"a\": 1} 5",
        ] {
            let e = parse_json::<Object>(body).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{body:?}");
            assert!(e.message.contains("exactly one"), "{}", e.message);
        }
    }

    #[test]
    fn a_json_body_needs_a_json_content_type_in_utf8() {
        for ok in [
            &b"application/json"[..],
            b"Application/JSON; charset=UTF-8",
            b"application/json;charset=\"utf-8\"",
            b"application/merge-patch+json",
        ] {
            assert!(check_content_type(Some(ok)).is_ok(), "{ok:?}");
        }
        for bad in [
            None,
            Some(&b"text/plain"[..]),
            Some(b"application/json; charset=utf-7"),
            Some(b"application/json; charset=latin1"),
            Some(b""),
        ] {
            assert_eq!(
                check_content_type(bad).unwrap_err().code,
                ErrorCode::UnsupportedMediaType,
                "{bad:?}"
            );
        }
    }
}
