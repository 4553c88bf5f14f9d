//! A read buffer between the socket and TLS. rustls asks its transport for at most 4 KiB at a time,
//! so a review of 4–16 KiB (most Pods) took two to five `recvfrom` calls per request, each a
//! system call and a trip through the I/O driver. Read ahead, whatever the socket holds (up to
//! [`CAPACITY`]) comes in with one call and rustls takes it from memory in its 4 KiB pieces.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One full TLS record (16 KiB of plaintext, its header, tag and padding) fits.
pub const CAPACITY: usize = 16 * 1024 + 512;

/// Wraps a connection's transport. Writes pass straight through.
pub struct ReadAhead<IO> {
    io: IO,
    /// Allocated at the first read that needs it: a connection that never sends holds nothing.
    buffer: Vec<u8>,
    /// `buffer[start..]` is read from the socket and not yet handed out.
    start: usize,
}

impl<IO> ReadAhead<IO> {
    pub fn new(io: IO) -> Self {
        Self {
            io,
            buffer: Vec::new(),
            start: 0,
        }
    }

    /// Bytes read from the socket and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.start
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ReadAhead<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buffered() == 0 {
            if out.remaining() >= CAPACITY {
                // The caller's buffer is as large as ours: a copy would buy nothing.
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            if this.buffer.capacity() < CAPACITY {
                this.buffer = Vec::with_capacity(CAPACITY);
            }
            this.buffer.clear();
            this.start = 0;
            let mut fill = ReadBuf::uninit(this.buffer.spare_capacity_mut());
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut fill))?;
            let filled = fill.filled().len();
            // SAFETY: `fill` was made over the spare capacity and the inner reader initialised
            // and filled its first `filled` bytes.
            unsafe { this.buffer.set_len(filled) };
            if filled == 0 {
                return Poll::Ready(Ok(())); // end of stream
            }
        }
        let n = out.remaining().min(this.buffered());
        out.put_slice(&this.buffer[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ReadAhead<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::task::Waker;

    use super::*;

    /// What the socket does at each read, in order.
    enum Step {
        Data(Vec<u8>),
        Pending,
        Fail,
    }

    /// A transport that plays its steps and notes the size of every buffer it was offered; after
    /// the last step it is at end of stream.
    struct Scripted {
        steps: VecDeque<Step>,
        offered: Vec<usize>,
        written: Vec<u8>,
    }

    impl Scripted {
        fn new(steps: Vec<Step>) -> Self {
            Self {
                steps: steps.into(),
                offered: Vec::new(),
                written: Vec::new(),
            }
        }
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.offered.push(out.remaining());
            match self.steps.pop_front() {
                None => Poll::Ready(Ok(())),
                Some(Step::Pending) => Poll::Pending,
                Some(Step::Fail) => Poll::Ready(Err(io::Error::other("connection reset"))),
                Some(Step::Data(mut data)) => {
                    let n = out.remaining().min(data.len());
                    out.put_slice(&data[..n]);
                    if n < data.len() {
                        self.steps.push_front(Step::Data(data.split_off(n)));
                    }
                    Poll::Ready(Ok(()))
                }
            }
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// One read of at most `size` bytes: Some(bytes) when ready (empty at end of stream), None
    /// when pending; an error as Err.
    fn read(reader: &mut ReadAhead<Scripted>, size: usize) -> io::Result<Option<Vec<u8>>> {
        let mut storage = vec![0u8; size];
        let mut out = ReadBuf::new(&mut storage);
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(reader).poll_read(&mut cx, &mut out) {
            Poll::Pending => Ok(None),
            Poll::Ready(Ok(())) => Ok(Some(out.filled().to_vec())),
            Poll::Ready(Err(error)) => Err(error),
        }
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn a_request_that_arrived_whole_takes_one_socket_read_however_small_the_reads_above() {
        // 4,385 bytes: the TLS record of a compact 4,224-byte review and its headers.
        let record = bytes(4385, 7);
        let mut reader = ReadAhead::new(Scripted::new(vec![Step::Data(record.clone())]));
        let first = read(&mut reader, 4096).unwrap().unwrap();
        assert_eq!(first.len(), 4096);
        assert_eq!(reader.buffered(), 289);
        let second = read(&mut reader, 4096).unwrap().unwrap();
        assert_eq!([first, second].concat(), record);
        assert_eq!(reader.io.offered, [CAPACITY], "one socket read");
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn the_bytes_come_out_in_order_however_the_socket_and_the_reader_above_cut_them() {
        let sizes_above = [1, 5, 300, 4096, 5000, CAPACITY - 1];
        let chunkings: [&[usize]; 5] = [
            &[40_000],
            &[1, 1, 1, 100_000],
            &[4385, 4385, 4385],
            &[CAPACITY, CAPACITY + 1, 3],
            &[17, 9000, 2, 20_000, 513],
        ];
        for size_above in sizes_above {
            for chunks in chunkings {
                let mut steps = Vec::new();
                let mut sent = Vec::new();
                for (i, len) in chunks.iter().enumerate() {
                    let data = bytes(*len, i as u8);
                    sent.extend_from_slice(&data);
                    steps.push(Step::Data(data));
                    // The socket has nothing more for a while between its chunks.
                    steps.push(Step::Pending);
                }
                let mut reader = ReadAhead::new(Scripted::new(steps));
                let mut received = Vec::new();
                let mut pending_in_a_row = 0;
                loop {
                    match read(&mut reader, size_above).unwrap() {
                        None => {
                            pending_in_a_row += 1;
                            assert!(pending_in_a_row < 2, "pending twice with nothing between");
                        }
                        Some(chunk) if chunk.is_empty() => break,
                        Some(chunk) => {
                            pending_in_a_row = 0;
                            assert!(chunk.len() <= size_above);
                            received.extend_from_slice(&chunk);
                        }
                    }
                }
                assert_eq!(received.len(), sent.len(), "{size_above} {chunks:?}");
                assert!(received == sent, "{size_above} {chunks:?}: bytes differ");
                // No read of the socket is ever smaller than the buffer, and none is made
                // while buffered bytes are left.
                assert!(
                    reader.io.offered.iter().all(|&n| n >= CAPACITY),
                    "{size_above} {chunks:?}: {:?}",
                    reader.io.offered
                );
            }
        }
    }

    #[test]
    fn end_of_stream_comes_after_the_buffered_bytes() {
        let mut reader = ReadAhead::new(Scripted::new(vec![Step::Data(bytes(10, 1))]));
        assert_eq!(read(&mut reader, 4).unwrap().unwrap().len(), 4);
        assert_eq!(read(&mut reader, 4).unwrap().unwrap().len(), 4);
        assert_eq!(read(&mut reader, 4).unwrap().unwrap().len(), 2);
        assert_eq!(read(&mut reader, 4).unwrap().unwrap(), Vec::<u8>::new());
        assert_eq!(read(&mut reader, 4).unwrap().unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn a_socket_error_comes_after_the_buffered_bytes_and_loses_none() {
        let mut reader = ReadAhead::new(Scripted::new(vec![Step::Data(bytes(100, 3)), Step::Fail]));
        assert_eq!(read(&mut reader, 60).unwrap().unwrap(), bytes(100, 3)[..60]);
        assert_eq!(read(&mut reader, 60).unwrap().unwrap(), bytes(100, 3)[60..]);
        let error = read(&mut reader, 60).unwrap_err();
        assert_eq!(error.to_string(), "connection reset");
    }

    #[test]
    fn a_reader_above_with_a_buffer_as_large_as_ours_reads_the_socket_directly() {
        let data = bytes(CAPACITY + 100, 9);
        let mut reader = ReadAhead::new(Scripted::new(vec![Step::Data(data.clone())]));
        let got = read(&mut reader, CAPACITY + 1000).unwrap().unwrap();
        assert_eq!(got, data);
        assert_eq!(reader.io.offered, [CAPACITY + 1000]);
        assert_eq!(reader.buffer.capacity(), 0, "no buffer of its own was made");
    }

    #[test]
    fn an_accepted_connection_holds_no_buffer_until_it_is_read() {
        let mut reader = ReadAhead::new(Scripted::new(vec![Step::Pending]));
        assert_eq!(reader.buffer.capacity(), 0);
        assert!(
            read(&mut reader, 4096).unwrap().is_none(),
            "pending passes through"
        );
        assert_eq!(reader.buffered(), 0);
        assert_eq!(reader.buffer.capacity(), CAPACITY);
    }

    #[test]
    fn writes_pass_straight_through() {
        let mut reader = ReadAhead::new(Scripted::new(Vec::new()));
        let mut cx = Context::from_waker(Waker::noop());
        let parts = [
            io::IoSlice::new(b"HTTP/1.1 200 OK\r\n"),
            io::IoSlice::new(b"body"),
        ];
        let written = Pin::new(&mut reader).poll_write_vectored(&mut cx, &parts);
        assert!(matches!(written, Poll::Ready(Ok(17))), "{written:?}");
        let written = Pin::new(&mut reader).poll_write(&mut cx, b"more");
        assert!(matches!(written, Poll::Ready(Ok(4))));
        assert_eq!(reader.io.written, b"HTTP/1.1 200 OK\r\nmore");
    }
}
