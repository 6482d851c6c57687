package cftest

import (
	"bytes"
	"compress/gzip"
	"io"
	"net"
)

// freeAddr returns a free 127.0.0.1:port address.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer ln.Close()
	return ln.Addr().String()
}

// gunzipped is data uncompressed when it is gzip, else data.
func gunzipped(data []byte) []byte {
	if len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
		return data
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return data
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		return data
	}
	return out
}
