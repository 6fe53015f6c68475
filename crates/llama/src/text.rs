//! Text helpers that need no model: the ChatML fallback template, incremental UTF-8
//! decoding of token pieces, and stop-string search.

use r2_pool::ChatMessage;

/// ChatML, used when a GGUF carries no chat template llama.cpp can apply.
pub fn chatml(messages: &[ChatMessage]) -> String {
    let mut s = String::new();
    for m in messages {
        s.push_str("<|im_start|>");
        s.push_str(m.role.as_str());
        s.push('\n');
        s.push_str(&m.content);
        s.push_str("<|im_end|>\n");
    }
    s.push_str("<|im_start|>assistant\n");
    s
}

/// Token pieces are bytes and a character may span two tokens: hold back an incomplete tail.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
    pub text: String,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                self.text.push_str(s);
                self.pending.clear();
            }
            Err(e) if e.error_len().is_none() => {
                // Incomplete sequence at the end: emit the valid part, keep the rest.
                let valid = e.valid_up_to();
                self.text
                    .push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                self.pending.drain(..valid);
            }
            Err(_) => {
                self.text.push_str(&String::from_utf8_lossy(&self.pending));
                self.pending.clear();
            }
        }
    }

    pub fn finish(mut self) -> String {
        if !self.pending.is_empty() {
            self.text.push_str(&String::from_utf8_lossy(&self.pending));
        }
        self.text
    }
}

/// Earliest position of any stop string that ends at or after byte `from` of `text`.
pub fn find_stop(text: &str, stops: &[String], from: usize) -> Option<usize> {
    let longest = stops.iter().map(|s| s.len()).max()?;
    let mut start = from.saturating_sub(longest);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text[start..].find(s.as_str()).map(|i| start + i))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_joins_split_characters() {
        let bytes = "né😀".as_bytes();
        let mut s = Utf8Stream::default();
        for b in bytes {
            s.push(&[*b]);
        }
        assert_eq!(s.finish(), "né😀");
        let mut bad = Utf8Stream::default();
        bad.push(&[0xff, b'a']);
        assert_eq!(bad.finish(), "\u{fffd}a");
    }

    #[test]
    fn stop_strings_are_found_across_pieces() {
        let stops = vec!["\nQuestion:".to_string(), "###".to_string()];
        assert_eq!(find_stop("answer 4\nQuestion: next", &stops, 12), Some(8));
        // A stop string that ended before the new piece was already checked.
        assert_eq!(
            find_stop("answer 4\nQuestion: next and more text", &stops, 30),
            None
        );
        assert_eq!(find_stop("abc##", &stops, 4), None);
        assert_eq!(find_stop("abc###", &stops, 5), Some(3));
        assert_eq!(find_stop("é###", &stops, 3), Some(2));
    }

    #[test]
    fn chatml_ends_with_assistant_turn() {
        let p = chatml(&[ChatMessage::system("s"), ChatMessage::user("u")]);
        assert_eq!(p, "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n");
    }
}
