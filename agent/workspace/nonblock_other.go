//go:build !unix

package workspace

// oNonblock is added when opening files for reading; it is a no-op here.
const oNonblock = 0
