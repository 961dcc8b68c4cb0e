//! HTTP handlers, one module per resource; each extracts, calls one service function, and maps
//! the result to a view.

pub mod async_invoke;
pub mod files;
pub mod health;
