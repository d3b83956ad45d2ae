//! `Sse`: a streaming client that parses frames like a browser's `EventSource`, over either transport.

use super::*;

/// One SSE event as a client sees it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    /// `data` as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("bad json {:?}: {e}", self.data))
    }

    /// The event id.
    pub fn seq(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|s| s.parse().ok())
            .expect("numeric id")
    }

    /// True for server control frames.
    pub fn is_control(&self) -> bool {
        matches!(
            self.event.as_str(),
            "snapshot" | "reset" | "shutdown" | "auth.expired"
        )
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A streaming SSE client that parses frames like a browser's `EventSource`.
pub struct Sse {
    stream: ByteStream,
    buf: Vec<u8>,
    /// The `lastEventId` a browser would hold.
    pub last_id: Option<String>,
    /// The `retry:` hint seen.
    pub retry: Option<u64>,
    /// Comment lines seen.
    pub comments: usize,
    /// `heartbeat` events seen (not returned by `next`: they only move the
    /// last id, as they do for the browser client).
    pub heartbeats: usize,
    /// The interval the last heartbeat announced.
    pub heartbeat_ms: Option<u64>,
    /// The stream ended.
    pub ended: bool,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Sse {
    /// Connects; `Err((status, body))` when the server refuses.
    pub async fn connect(
        url: &str,
        last_event_id: Option<u64>,
        headers: &[(&str, &str)],
    ) -> Result<Sse, (StatusCode, String)> {
        let client = client_builder().build().expect("client");
        Sse::connect_with(&client, url, last_event_id, headers).await
    }

    /// Connects with `client` (over HTTP/2, streams of one client share its
    /// connection).
    pub async fn connect_with(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<u64>,
        headers: &[(&str, &str)],
    ) -> Result<Sse, (StatusCode, String)> {
        let mut req = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req
            .send()
            .await
            .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
        if url.starts_with("https://") {
            // Over TLS every stream test is an HTTP/2 test.
            assert_eq!(res.version(), reqwest::Version::HTTP_2, "{url}");
        }
        if res.status() != StatusCode::OK {
            let s = res.status();
            return Err((s, res.text().await.unwrap_or_default()));
        }
        let headers = res.headers().clone();
        Ok(Sse {
            stream: Box::pin(res.bytes_stream()),
            buf: Vec::new(),
            last_id: last_event_id.map(|i| i.to_string()),
            retry: None,
            comments: 0,
            heartbeats: 0,
            heartbeat_ms: None,
            ended: false,
            headers,
        })
    }

    /// The next event (any type), or `None` at the end of the stream or after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(pos) = find_blank_line(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..pos + 2).collect();
                if let Some(ev) = self.parse_block(&block) {
                    return Some(ev);
                }
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Some(Err(_))) | Ok(None) => self.ended = true,
            }
        }
    }

    /// The next event that is not a server control frame.
    pub async fn next_data(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next(left).await?;
            if !ev.is_control() {
                return Some(ev);
            }
        }
    }

    /// The next event of type `kind`.
    pub async fn next_of(&mut self, kind: &str, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next(left).await?;
            if ev.event == kind {
                return Some(ev);
            }
        }
    }

    /// Collects `n` data events (panics with what it has after `timeout`).
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_data(left).await {
                Some(ev) => out.push(ev),
                None => panic!(
                    "stream gave {} of {n} events (ended: {}); last: {:?}",
                    out.len(),
                    self.ended,
                    out.last()
                ),
            }
        }
        out
    }

    fn parse_block(&mut self, block: &[u8]) -> Option<SseEvent> {
        let text = String::from_utf8_lossy(block);
        let mut id = None;
        let mut event = None;
        let mut data: Option<String> = None;
        for line in text.split('\n') {
            if line.is_empty() {
                continue;
            }
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "id" => id = Some(value.to_string()),
                "event" => event = Some(value.to_string()),
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                },
                "retry" => self.retry = value.parse().ok(),
                _ => {}
            }
        }
        if let Some(id) = &id {
            self.last_id = Some(id.clone());
        }
        let data = data?;
        if event.as_deref() == Some("heartbeat") {
            self.heartbeats += 1;
            let v: Value = serde_json::from_str(&data).expect("heartbeat data is JSON");
            self.heartbeat_ms = v["interval_ms"].as_u64();
            assert!(id.is_some(), "a heartbeat without id: {text:?}");
            return None;
        }
        Some(SseEvent {
            id: id.or_else(|| self.last_id.clone()),
            event: event.unwrap_or_else(|| "message".into()),
            data,
        })
    }
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}
