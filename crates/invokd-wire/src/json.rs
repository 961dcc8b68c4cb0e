//! JSON request bodies: malformed JSON (400) told apart from JSON of the wrong shape (422),
//! which names the field.

use invokd_api::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

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
    match serde_path_to_error::deserialize(de) {
        Ok(v) => Ok(v),
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
