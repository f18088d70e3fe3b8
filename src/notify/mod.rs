//! Notifications: rendered into the outbox with the state change that decided them, then
//! delivered — by mail (`mail`) and by webhook (`webhook`), through one flusher (`outbox`).

pub mod chat;
pub mod group;
pub mod mail;
pub mod outbox;
pub mod webhook;
