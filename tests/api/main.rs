//! End-to-end tests: each starts its own hub on port 0 and talks to it over
//! real sockets with a real WebSocket client.

mod helpers;

mod errors;
mod heartbeat;
mod http;
mod identify;
mod limits;
mod memory;
mod ops;
mod process;
mod replies;
mod routing;
mod settings;
mod shutdown;
mod slow_consumer;
