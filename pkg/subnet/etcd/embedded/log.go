package embedded

import (
	"errors"
	"net"
	"net/http"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
)

// serveFailed is what etcd's embed package logs, at error level, whatever
// the error that ends one of its serving goroutines; Close ends them all by
// closing their listeners and servers, and each then logs its closed
// listener as a failure, with a stack trace (etcd-io/etcd#17424).
const serveFailed = "setting up serving from embedded etcd failed."

// newLogger is the member's logger: errors only, as JSON on stderr (which
// subnetd shares), without stack traces, which tell an operator nothing;
// and without the errors of the member's own stop once closing is set.
func newLogger(closing *atomic.Bool) (*zap.Logger, error) {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	cfg.Sampling = nil
	cfg.DisableStacktrace = true
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg.Build(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return stopFilter{Core: c, closing: closing} }))
}

// stopFilter drops serveFailed entries whose error is a closed listener or
// server while the member is closing; any other entry, or one before Close,
// is written.
type stopFilter struct {
	zapcore.Core
	closing *atomic.Bool
}

func (f stopFilter) With(fields []zapcore.Field) zapcore.Core {
	return stopFilter{Core: f.Core.With(fields), closing: f.closing}
}

func (f stopFilter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if f.Enabled(e.Level) {
		return ce.AddCore(e, f)
	}
	return ce
}

func (f stopFilter) Write(e zapcore.Entry, fields []zapcore.Field) error {
	if f.closing.Load() && e.Message == serveFailed && closedByStop(fields) {
		return nil
	}
	return f.Core.Write(e, fields)
}

// closedByStop reports whether the entry's error is what a listener or
// server returns once closed: net.ErrClosed, http.ErrServerClosed,
// grpc.ErrServerStopped, or cmux's ErrServerClosed and ErrListenerClosed
// (cmux is etcd's dependency, not ours: compared by their text).
func closedByStop(fields []zapcore.Field) bool {
	for _, f := range fields {
		err, ok := f.Interface.(error)
		if f.Type != zapcore.ErrorType || !ok {
			continue
		}
		msg := err.Error()
		return errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) ||
			msg == "mux: server closed" || msg == "mux: listener closed"
	}
	return false
}
