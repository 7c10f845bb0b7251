// Package netconf parses what every plugin of the suite receives: the network
// configuration on stdin, its prevResult and runtimeConfig, CNI_ARGS and the
// GC attachment list. Its Error type carries the CNI error code; the runner in
// pkg/cniplugin is the one place that turns errors into the spec's JSON.
//
// It imports nothing of the suite: every plugin package imports it.
package netconf

import "fmt"

// Error codes of the CNI specification (1.1) used by the suite.
const (
	CodeIncompatibleVersion uint = 1
	CodeUnsupportedField    uint = 2
	CodeUnknownContainer    uint = 3
	CodeInvalidEnv          uint = 4
	CodeIO                  uint = 5
	CodeDecoding            uint = 6
	CodeInvalidConfig       uint = 7
	CodeTryAgainLater       uint = 11
	CodeUnavailable         uint = 50
	CodeExhausted           uint = 51
	CodeInternal            uint = 999
)

// Error is an error with a CNI code. Msg says what went wrong and what to do.
type Error struct {
	Code uint
	Msg  string
	Err  error // cause, kept for errors.Is/As and printed as details
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an Error with the given code; a %w verb becomes the cause.
func Errorf(code uint, format string, a ...any) *Error {
	err := fmt.Errorf(format, a...)
	e := &Error{Code: code, Msg: err.Error()}
	if u, ok := err.(interface{ Unwrap() error }); ok {
		e.Err = u.Unwrap()
		e.Msg = trimCause(e.Msg, e.Err)
	}
	return e
}

// trimCause drops the cause's text from the end of msg, since Error() adds it back.
func trimCause(msg string, cause error) string {
	if cause == nil {
		return msg
	}
	suffix := ": " + cause.Error()
	if len(msg) >= len(suffix) && msg[len(msg)-len(suffix):] == suffix {
		return msg[:len(msg)-len(suffix)]
	}
	return msg
}

// Invalid reports an invalid network configuration (code 7).
func Invalid(format string, a ...any) *Error { return Errorf(CodeInvalidConfig, format, a...) }
