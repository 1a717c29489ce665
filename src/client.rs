//! A small client of the protocol over a real WebSocket, shared by the
//! end-to-end tests and the benchmark tool. Every wait takes a deadline.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The default deadline for one expected event.
pub const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("nothing arrived within {0:?}")]
    Timeout(Duration),
    #[error("the connection closed ({0:?})")]
    Closed(Option<(u16, String)>),
    #[error("not JSON: {0}")]
    Json(String),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// GETs an HTTP URL and returns the status code, within [`WAIT`] (used by
/// `socket-hub healthcheck`, which needs no curl in the image).
pub async fn http_status(url: &str) -> Result<u16, String> {
    let request = awc::Client::new().get(url).send();
    let response = tokio::time::timeout(WAIT, request)
        .await
        .map_err(|_| format!("no answer within {WAIT:?}"))?;
    response.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

/// What the hub sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A text message, parsed.
    Frame(Value),
    /// A close frame with its code and reason, or the socket ended without.
    Closed(Option<(u16, String)>),
    /// A binary message (the hub never sends one).
    Binary(Vec<u8>),
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Answer the hub's heartbeat `PING`s and hide them from `recv_frame`.
    pub auto_pong: bool,
}

impl Client {
    /// Connects to a `ws://` URL.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .map_err(|_| ClientError::Timeout(WAIT))??;
        Ok(Client { ws, auto_pong: true })
    }

    /// Connects with extra request headers (`Origin`, `X-Forwarded-For`, ...).
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Result<Self, ClientError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| ClientError::Unexpected(e.to_string()))?;
            let value = HeaderValue::from_str(value).map_err(|e| ClientError::Unexpected(e.to_string()))?;
            request.headers_mut().insert(name, value);
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| ClientError::Timeout(WAIT))??;
        Ok(Client { ws, auto_pong: true })
    }

    pub async fn send_json(&mut self, value: &Value) -> Result<(), ClientError> {
        self.send_text(value.to_string()).await
    }

    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        self.ws.send(Message::text(text.into())).await?;
        Ok(())
    }

    /// Sends text messages in one burst: queued, then written with one flush
    /// (a single `write()` while they fit tungstenite's write buffer).
    pub async fn send_texts(&mut self, texts: impl IntoIterator<Item = String>) -> Result<(), ClientError> {
        for text in texts {
            self.ws.feed(Message::text(text)).await?;
        }
        self.ws.flush().await?;
        Ok(())
    }

    /// Sends any WebSocket message (binary, ping, close, ...).
    pub async fn send_raw(&mut self, msg: Message) -> Result<(), ClientError> {
        self.ws.send(msg).await?;
        Ok(())
    }

    /// The next WebSocket message before `deadline`; `None` when the socket
    /// ended. Hub heartbeat `PING`s are answered when `auto_pong` is set and
    /// returned only when `keep_heartbeats` is; transport pings and pongs
    /// are tungstenite's.
    async fn next_message(
        &mut self,
        deadline: tokio::time::Instant,
        wait: Duration,
        keep_heartbeats: bool,
    ) -> Result<Option<Message>, ClientError> {
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout(wait))?;
            let msg = match next {
                None | Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(msg)) => msg,
            };
            if let Message::Text(text) = &msg {
                let heartbeat = serde_json::from_str::<Value>(text)
                    .ok()
                    .filter(|v| v["op"] == 3 && v.get("source").is_none());
                if let Some(ping) = heartbeat {
                    if self.auto_pong {
                        self.send_json(&json!({"op": 4, "id": ping["id"]})).await?;
                    }
                    if !keep_heartbeats {
                        continue;
                    }
                }
            }
            return Ok(Some(msg));
        }
    }

    /// The next thing the hub sent, within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Result<Received, ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        match self.next_message(deadline, wait, !self.auto_pong).await? {
            None => Ok(Received::Closed(None)),
            Some(Message::Text(text)) => serde_json::from_str(&text)
                .map(Received::Frame)
                .map_err(|_| ClientError::Json(text.to_string())),
            Some(Message::Binary(b)) => Ok(Received::Binary(b.to_vec())),
            Some(Message::Close(frame)) => Ok(Received::Closed(
                frame.map(|f| (u16::from(f.code), f.reason.to_string())),
            )),
            Some(other) => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The next text message exactly as sent (hub heartbeat `PING`s handled
    /// as in [`Client::recv`]); for checks that `serde_json::Value` would blur.
    pub async fn recv_text(&mut self, wait: Duration) -> Result<String, ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        match self.next_message(deadline, wait, false).await? {
            None => Err(ClientError::Closed(None)),
            Some(Message::Text(text)) => Ok(text.to_string()),
            Some(Message::Close(frame)) => Err(ClientError::Closed(
                frame.map(|f| (u16::from(f.code), f.reason.to_string())),
            )),
            Some(other) => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The next JSON frame; a close is an error.
    pub async fn recv_frame(&mut self) -> Result<Value, ClientError> {
        self.recv_frame_within(WAIT).await
    }

    pub async fn recv_frame_within(&mut self, wait: Duration) -> Result<Value, ClientError> {
        match self.recv(wait).await? {
            Received::Frame(v) => Ok(v),
            Received::Closed(c) => Err(ClientError::Closed(c)),
            Received::Binary(_) => Err(ClientError::Unexpected("binary message".into())),
        }
    }

    /// Reads until the connection closes and returns the `DISCONNECT`
    /// frame's code (if one came) and the close frame's code.
    pub async fn recv_close(&mut self, wait: Duration) -> Result<(Option<u16>, Option<u16>), ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut disconnect = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Ok(Received::Frame(v)) if v["op"] == 2 => disconnect = v["data"]["code"].as_u64().map(|c| c as u16),
                Ok(Received::Frame(_)) | Ok(Received::Binary(_)) => {}
                Ok(Received::Closed(c)) => return Ok((disconnect, c.map(|(code, _)| code))),
                // A reset after the close frame counts as closed.
                Err(ClientError::Ws(_)) => return Ok((disconnect, None)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `IDENTIFY` and returns the reply's `data`, or the error reply.
    pub async fn identify(&mut self, token: &str, groups: Option<&[&str]>) -> Result<Value, ClientError> {
        let mut data = json!({"token": token});
        if let Some(groups) = groups {
            data["groups"] = json!(groups);
        }
        self.send_json(&json!({"op": 1, "id": "identify", "data": data}))
            .await?;
        let reply = self.recv_frame().await?;
        if reply["event"] == "IDENTIFY" {
            Ok(reply["data"].clone())
        } else {
            Err(ClientError::Unexpected(reply.to_string()))
        }
    }

    /// Closes politely.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: WsCloseCode::Normal,
                reason: "".into(),
            }))
            .await?;
        Ok(())
    }

    /// The underlying stream, for callers that split it (the benchmark).
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }
}

/// The writing half of a [`Client::split`] socket.
pub type ClientSink = futures_util::stream::SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
/// The reading half of a [`Client::split`] socket.
pub type ClientStream = futures_util::stream::SplitStream<WebSocketStream<MaybeTlsStream<TcpStream>>>;

impl Client {
    /// Connects and identifies in one go (the benchmark opens thousands this
    /// way); returns the client and its session id.
    pub async fn connect_identified(
        url: &str,
        token: &str,
        groups: Option<&[&str]>,
    ) -> Result<(Self, String), ClientError> {
        let mut client = Client::connect_nodelay(url).await?;
        let data = client.identify(token, groups).await?;
        let session = data["session"]
            .as_str()
            .ok_or_else(|| ClientError::Unexpected(data.to_string()))?
            .to_string();
        Ok((client, session))
    }

    /// Connects to a `ws://` URL tuned for measuring: Nagle's algorithm off,
    /// so that a small frame is never held back waiting for the previous
    /// one's ACK, and an 8 KiB read buffer instead of tungstenite's 128 KiB,
    /// which it zero-fills before every read (at one frame per read that
    /// memset was most of the reader's CPU).
    pub async fn connect_nodelay(url: &str) -> Result<Self, ClientError> {
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024);
        let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
        let (ws, _) = tokio::time::timeout(WAIT, connect)
            .await
            .map_err(|_| ClientError::Timeout(WAIT))??;
        Ok(Client { ws, auto_pong: true })
    }

    /// Splits the socket so that one task sends while another reads. The
    /// hub's heartbeat `PING`s are then the reader's to answer.
    pub fn split(self) -> (ClientSink, ClientStream) {
        self.ws.split()
    }
}
