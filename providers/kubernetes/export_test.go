package kubernetes

// DropForwardConnection closes the connection to the pod behind a port
// forward's local URL, as a dropped API server connection would, and
// reports whether there was one. The forward's listener stays.
func DropForwardConnection(url string) bool {
	forwards.mu.Lock()
	defer forwards.mu.Unlock()
	for _, f := range forwards.m {
		if f.url != url {
			continue
		}
		f.mu.Lock()
		conn := f.conn
		f.mu.Unlock()
		if conn != nil {
			_ = conn.Close()
			return true
		}
	}
	return false
}
