//! The playground: pick a model, fill in a form made from its input schema (or raw JSON),
//! submit a real job through the job service, then watch it on its page.

use askama::Template;
use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use invokd_core::service::{ServiceError, Submission};
use serde_json::{Map, Value};

use super::{Chrome, prefix, see_other};
use crate::{
    console::{
        ConsoleError, Posted, Viewer, Who,
        form::{self, Control, Field},
        form_pairs, render,
    },
    error::ApiError,
    state::AppState,
};

/// A model in the picker.
pub struct ModelChoice {
    pub id: String,
    pub title: String,
    pub kind: String,
}

#[derive(Template)]
#[template(path = "console/playground.html")]
struct Playground {
    chrome: Chrome,
    models: Vec<ModelChoice>,
    model: String,
    description: String,
    required: Vec<Field>,
    optional: Vec<Field>,
    raw: String,
    errors: Vec<String>,
    can_submit: bool,
}

impl Playground {
    fn new(
        state: &AppState,
        viewer: &Viewer,
        model: &str,
        given: Option<&Map<String, Value>>,
    ) -> Result<Self, ConsoleError> {
        let catalog = state.service.catalog();
        let mut models: Vec<ModelChoice> = catalog
            .iter()
            .map(|m| ModelChoice {
                id: m.id.clone(),
                title: m.title.clone(),
                kind: format!("{:?}", m.kind).to_lowercase(),
            })
            .collect();
        models.sort_by(|a, b| a.id.cmp(&b.id));
        let chosen = if model.is_empty() {
            models.first().map(|m| m.id.clone()).unwrap_or_default()
        } else {
            model.to_owned()
        };
        let m = catalog.get(&chosen).ok_or_else(|| {
            ConsoleError::new(
                StatusCode::NOT_FOUND,
                format!("model {chosen:?} is not in the catalog"),
            )
        })?;
        let (required, optional) = form::fields(&m.input_schema, given)
            .into_iter()
            .partition(|f| f.required);
        Ok(Self {
            chrome: Chrome::new(state, viewer, "playground"),
            models,
            model: chosen,
            description: m.description.clone(),
            required,
            optional,
            raw: String::new(),
            errors: Vec::new(),
            can_submit: !viewer.is_admin(),
        })
    }
}

pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let model = form_pairs(raw.unwrap_or_default().as_bytes())
        .into_iter()
        .find(|(k, _)| k == "model")
        .map(|(_, v)| v)
        .unwrap_or_default();
    render(&Playground::new(&state, &viewer, &model, None)?)
}

/// The input a posted playground asks for: its raw JSON when given, else its form.
fn input_of(schema: &Value, posted: &Posted) -> Result<Map<String, Value>, String> {
    match posted.get("raw").map(str::trim) {
        Some(text) if !text.is_empty() => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(o)) => Ok(o),
            Ok(_) => Err("raw JSON: the input must be a JSON object".into()),
            Err(e) => Err(format!("raw JSON: not valid JSON ({e})")),
        },
        _ => form::input_of(schema, &posted.fields),
    }
}

pub async fn submit(
    State(state): State<AppState>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    let model = posted.get("model").unwrap_or_default().to_owned();
    let Some(m) = state.service.catalog().get(&model).cloned() else {
        return Err(ConsoleError::new(
            StatusCode::NOT_FOUND,
            format!("model {model:?} is not in the catalog"),
        ));
    };
    let Who::Key(caller) = &posted.viewer.who else {
        return Err(ConsoleError::new(
            StatusCode::FORBIDDEN,
            "The admin token has no project to run jobs in: sign in with an access key.",
        ));
    };
    // The page again, with what was posted and why it was refused; nothing stored.
    let refused = |status: StatusCode, given: Option<&Map<String, Value>>, errors: Vec<String>| {
        let mut page = Playground::new(&state, &posted.viewer, &model, given)?;
        page.errors = errors;
        page.raw = posted.get("raw").unwrap_or_default().to_owned();
        Ok::<_, ConsoleError>((status, render(&page)?).into_response())
    };
    let input = match input_of(&m.input_schema, &posted) {
        Ok(i) => i,
        Err(e) => return refused(StatusCode::UNPROCESSABLE_ENTITY, None, vec![e]),
    };
    let submission = Submission {
        model_id: model.clone(),
        input: input.clone(),
        tags: vec![("source".into(), "console".into())],
        priority: 0,
        start_within: None,
        idempotency_key: None,
        webhook_url: None,
        run_timeout: None,
    };
    match state.service.submit(caller, submission).await {
        Ok(s) => {
            crate::metrics::job_submitted(&s.job.model_id);
            Ok(see_other(&format!("{}/jobs/{}", prefix(&state), s.job.id)))
        }
        Err(e @ ServiceError::InvalidInput(_)) => {
            let message = ApiError::from(e).message;
            refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&input),
                vec![message],
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a field's control is one of these, for the template.
impl Field {
    pub fn is_text(&self) -> bool {
        matches!(self.control, Control::Text { multiline: false })
    }
    pub fn is_textarea(&self) -> bool {
        matches!(self.control, Control::Text { multiline: true })
    }
    pub fn is_json(&self) -> bool {
        matches!(self.control, Control::Json)
    }
    pub fn is_switch(&self) -> bool {
        matches!(self.control, Control::Switch)
    }
    pub fn options(&self) -> &[String] {
        match &self.control {
            Control::Select { options } => options,
            _ => &[],
        }
    }
    pub fn is_select(&self) -> bool {
        matches!(self.control, Control::Select { .. })
    }
    pub fn number(&self) -> Option<(&'static str, &str, &str)> {
        match &self.control {
            Control::Number { integer, min, max } => Some((
                if *integer { "1" } else { "any" },
                min.as_deref().unwrap_or_default(),
                max.as_deref().unwrap_or_default(),
            )),
            _ => None,
        }
    }
    pub fn size(&self) -> Option<(&[String], &str, &str, &str)> {
        match &self.control {
            Control::Size {
                presets,
                width,
                height,
                max,
            } => Some((presets, width, height, max.as_deref().unwrap_or_default())),
            _ => None,
        }
    }
}
