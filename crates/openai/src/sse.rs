//! Incremental parsing of server-sent events: bytes in, the `data` of complete events out.
//! Tolerates `\r\n` line endings, comments (`: ...`) and several `data:` lines per event.

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes; returns the data of every event completed by them. Invalid UTF-8 in a
    /// line is replaced, never a panic.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(rest) = line.strip_prefix("data:") {
                self.data
                    .push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
            }
            // `event:`, `id:`, `retry:` and comments carry nothing we use.
        }
        events
    }

    /// Bytes received after the last complete line (a truncated stream leaves some).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || !self.data.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_line_endings() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: {\"a\"").is_empty());
        assert_eq!(p.push(b":1}\n\n: comment\n\ndata: x\r\n"), ["{\"a\":1}"]);
        assert!(p.has_partial());
        assert_eq!(
            p.push(b"data: y\r\n\r\ndata: [DONE]\n\n"),
            ["x\ny", "[DONE]"]
        );
        assert!(!p.has_partial());
        assert_eq!(p.push(b"data:\xff\n\n"), ["\u{fffd}"]);
    }
}
