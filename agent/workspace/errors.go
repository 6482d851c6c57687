package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"syscall"
)

// sentinel is the type of the package's sentinel errors. It may wrap a
// standard io/fs error so that errors.Is(ErrNotFound, fs.ErrNotExist) holds.
type sentinel struct {
	msg  string
	base error
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.base }

// Sentinel errors. Every error returned by this package that is caused by
// the client's request wraps exactly one of them; test with errors.Is and map
// to an HTTP status with HTTPStatus.
var (
	// ErrInvalidPath means the client-supplied path is malformed: empty,
	// absolute, containing "..", NUL, control characters or backslashes,
	// too long or not valid UTF-8. It wraps fs.ErrInvalid.
	ErrInvalidPath error = &sentinel{"invalid path", fs.ErrInvalid}
	// ErrNotFound means the path does not exist. It wraps fs.ErrNotExist.
	ErrNotFound error = &sentinel{"not found", fs.ErrNotExist}
	// ErrIsDir means the path names a directory where a file was expected.
	ErrIsDir error = &sentinel{"is a directory", nil}
	// ErrNotDir means the path names something other than a directory where
	// a directory was expected (Tree and Archive sub-directories).
	ErrNotDir error = &sentinel{"not a directory", nil}
	// ErrSymlink means the final element of the path is a symbolic link,
	// which this package never follows.
	ErrSymlink error = &sentinel{"is a symbolic link", nil}
	// ErrNotRegular means the path names a device, FIFO, socket or other
	// non-regular file.
	ErrNotRegular error = &sentinel{"not a regular file", nil}
	// ErrExists means the file exists and overwriting was not requested.
	// It wraps fs.ErrExist.
	ErrExists error = &sentinel{"already exists", fs.ErrExist}
	// ErrTooLarge means the content is larger than the allowed limit.
	ErrTooLarge error = &sentinel{"too large", nil}
	// ErrEscapes means resolving the path would leave the workspace, for
	// example through a symbolic link pointing outside it.
	ErrEscapes error = &sentinel{"path escapes the workspace", nil}
	// ErrTooMany means a listing was truncated because it has more entries
	// than allowed.
	ErrTooMany error = &sentinel{"too many entries", nil}
)

// maxPathInMessage bounds how much of a client path is quoted in an error
// message, so that a hostile 4 KiB path does not produce a 4 KiB message.
const maxPathInMessage = 128

// PathError is the error type returned for operations on a client-supplied
// path. Its message never contains the workspace's host directory.
type PathError struct {
	// Path is the path as the client supplied it (relative to the workspace).
	Path string
	// Reason is a human explanation of the problem; it may be empty.
	Reason string
	// Err is the underlying error: one of the sentinel errors, or a system
	// error such as syscall.EACCES for unexpected failures.
	Err error
}

// Error returns a message such as
// `workspace: "../x": path must not contain ".." elements: invalid path`.
func (e *PathError) Error() string {
	p := e.Path
	if len(p) > maxPathInMessage {
		p = p[:maxPathInMessage] + "..."
	}
	if e.Reason == "" {
		return fmt.Sprintf("workspace: %q: %v", p, e.Err)
	}
	return fmt.Sprintf("workspace: %q: %s: %v", p, e.Reason, e.Err)
}

// Unwrap returns the underlying error.
func (e *PathError) Unwrap() error { return e.Err }

func pathErr(p string, sentinel error, reason string) error {
	return &PathError{Path: p, Reason: reason, Err: sentinel}
}

// HTTPStatus maps an error returned by this package to an HTTP status code:
// 400 for invalid, escaping, symlinked, non-regular paths and wrong file
// types, 404 for missing files, 409 for existing files, 413 for too large
// content and 500 for anything else (including nil, which is not an error
// response and should not be passed).
func HTTPStatus(err error) int {
	switch {
	case errors.Is(err, ErrInvalidPath), errors.Is(err, ErrEscapes),
		errors.Is(err, ErrSymlink), errors.Is(err, ErrNotRegular),
		errors.Is(err, ErrIsDir), errors.Is(err, ErrNotDir):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrExists):
		return http.StatusConflict
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	default:
		return http.StatusInternalServerError
	}
}

// rootEscapeMsg is the text of os's unexported error for a name that
// resolves outside an os.Root.
const rootEscapeMsg = "path escapes from parent"

// isEscape reports whether err is os.Root's "path escapes" error.
func isEscape(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if e.Error() == rootEscapeMsg {
			return true
		}
	}
	return false
}

// stripHostPath removes os.PathError / os.LinkError wrappers, whose
// messages would contain the workspace's absolute host path, and returns the
// underlying cause (usually a syscall.Errno).
func stripHostPath(err error) error {
	for {
		var pe *fs.PathError
		var le *os.LinkError
		switch {
		case errors.As(err, &pe):
			err = pe.Err
		case errors.As(err, &le):
			err = le.Err
		default:
			return err
		}
	}
}

// mapErr turns an error from os.Root into a *PathError for client path p.
// op describes what was being done, for unexpected errors.
func mapErr(p, op string, err error) error {
	if err == nil {
		return nil
	}
	if isEscape(err) {
		return pathErr(p, ErrEscapes, "a symbolic link in the path leads outside the workspace")
	}
	cause := stripHostPath(err)
	switch {
	case errors.Is(cause, fs.ErrNotExist):
		return pathErr(p, ErrNotFound, "")
	case errors.Is(cause, syscall.ENOTDIR):
		return pathErr(p, ErrNotFound, "an element of the path is not a directory")
	case errors.Is(cause, syscall.ELOOP):
		return pathErr(p, ErrSymlink, "too many levels of symbolic links")
	case errors.Is(cause, syscall.ENAMETOOLONG):
		return pathErr(p, ErrInvalidPath, "path is too long")
	}
	return &PathError{Path: p, Reason: op, Err: cause}
}
