//go:build unix

package workspace

import "syscall"

// oNonblock is added when opening files for reading so that a FIFO swapped
// in for a regular file cannot block the server.
const oNonblock = syscall.O_NONBLOCK
