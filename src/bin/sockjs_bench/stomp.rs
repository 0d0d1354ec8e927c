//! A minimal STOMP 1.2 client side: the frames the benchmark sends, and a reader that splits
//! a byte stream into frames.

/// CONNECT (login and passcode only when given).
pub fn connect(host: &str, login: Option<&str>, passcode: Option<&str>) -> Vec<u8> {
    let mut f = format!("CONNECT\naccept-version:1.2,1.1,1.0\nhost:{host}\nheart-beat:0,0\n");
    if let Some(l) = login {
        f.push_str(&format!("login:{l}\n"));
    }
    if let Some(p) = passcode {
        f.push_str(&format!("passcode:{p}\n"));
    }
    f.push_str("\n\0");
    f.into_bytes()
}

/// SUBSCRIBE with a receipt request, so the caller knows when it is in force.
pub fn subscribe(id: u32, destination: &str) -> Vec<u8> {
    format!("SUBSCRIBE\nid:{id}\ndestination:{destination}\nack:auto\nreceipt:sub-{id}\n\n\0")
        .into_bytes()
}

/// SEND with a plain-text body.
pub fn send(destination: &str, body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"SEND\ndestination:");
    out.extend_from_slice(destination.as_bytes());
    out.extend_from_slice(b"\ncontent-type:text/plain\n\n");
    out.extend_from_slice(body);
    out.push(0);
}

/// SEND with a plain-text body and a receipt request.
pub fn send_with_receipt(destination: &str, body: &[u8], receipt: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"SEND\ndestination:");
    out.extend_from_slice(destination.as_bytes());
    out.extend_from_slice(b"\nreceipt:");
    out.extend_from_slice(receipt.as_bytes());
    out.extend_from_slice(b"\ncontent-type:text/plain\n\n");
    out.extend_from_slice(body);
    out.push(0);
}

/// One received frame.
pub struct Frame<'a> {
    pub command: &'a [u8],
    pub headers: &'a [u8],
    pub body: &'a [u8],
}

impl Frame<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.headers)
            .ok()?
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k == name).then_some(v)
            })
    }
}

/// Splits transport messages into STOMP frames; keeps a partial frame between messages.
#[derive(Default)]
pub struct Reader {
    partial: Vec<u8>,
}

impl Reader {
    /// Feed one transport message and call `f` for each complete frame.
    pub fn feed(&mut self, msg: &[u8], mut f: impl FnMut(&Frame<'_>)) {
        if self.partial.is_empty() {
            let used = split(msg, &mut f);
            self.partial.extend_from_slice(&msg[used..]);
        } else {
            self.partial.extend_from_slice(msg);
            let data = std::mem::take(&mut self.partial);
            let used = split(&data, &mut f);
            self.partial = data[used..].to_vec();
        }
        // Drop EOL heart-beats left alone.
        if self.partial.iter().all(|&b| b == b'\n' || b == b'\r') {
            self.partial.clear();
        }
    }
}

/// Call `f` for each complete frame in `data`; returns the bytes consumed.
fn split(data: &[u8], f: &mut impl FnMut(&Frame<'_>)) -> usize {
    let mut pos = 0;
    loop {
        while pos < data.len() && (data[pos] == b'\n' || data[pos] == b'\r') {
            pos += 1;
        }
        let rest = &data[pos..];
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            return pos;
        };
        let frame = &rest[..end];
        pos += end + 1;
        let (head, body) = match find2(frame) {
            Some((i, skip)) => (&frame[..i], &frame[i + skip..]),
            None => (frame, &frame[frame.len()..]),
        };
        let (command, headers) = match head.iter().position(|&b| b == b'\n') {
            Some(i) => (&head[..i], &head[i + 1..]),
            None => (head, &head[head.len()..]),
        };
        let command = command.strip_suffix(b"\r").unwrap_or(command);
        f(&Frame {
            command,
            headers,
            body,
        });
    }
}

/// The end of the headers: `\n\n` or `\r\n\r\n`.
fn find2(frame: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < frame.len() {
        if frame[i] == b'\n' {
            if frame[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if frame[i + 1] == b'\r' && frame.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_messages() {
        let mut r = Reader::default();
        let mut got = Vec::new();
        r.feed(
            b"CONNECTED\nversion:1.2\n\n\0\nMESSAGE\nsubscription:0\n\nhel",
            |f| got.push((f.command.to_vec(), f.body.to_vec())),
        );
        r.feed(b"lo\0", |f| got.push((f.command.to_vec(), f.body.to_vec())));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, b"CONNECTED");
        assert_eq!(got[1], (b"MESSAGE".to_vec(), b"hello".to_vec()));
    }
}
