package sites

import "strings"

// ChunkSize is the size of the data chunks of a backup stream (age's stream uses 64 KiB too;
// well under gRPC's default 4 MiB message limit).
const ChunkSize = 64 << 10

// chunker cuts a byte stream into chunks of exactly size bytes (the last one shorter) and
// hands each to emit. Every chunk is a fresh slice: emit may keep it.
type chunker struct {
	size int
	buf  []byte
	emit func([]byte) error
}

func newChunker(size int, emit func([]byte) error) *chunker {
	return &chunker{size: size, emit: emit}
}

func (c *chunker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.buf == nil {
			c.buf = make([]byte, 0, c.size)
		}
		k := min(c.size-len(c.buf), len(p))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == c.size {
			b := c.buf
			c.buf = nil
			if err := c.emit(b); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// Flush emits what is left, if anything.
func (c *chunker) Flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	b := c.buf
	c.buf = nil
	return c.emit(b)
}

// tail keeps the last max bytes written to it: stderr of a child, the end of a dump.
type tail struct {
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

func (t *tail) String() string { return string(t.buf) }

// lastLines returns the last n non-empty lines of s.
func lastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, "\r"); strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
