package cniplugin

import "log/slog"

// Undo collects the inverse of each step of an ADD, registered right after
// the step succeeds, so that a failing ADD can take back everything it did.
type Undo struct {
	steps []undoStep
}

type undoStep struct {
	what string
	fn   func() error
}

// Push registers fn as the way to undo the step described by what.
func (u *Undo) Push(what string, fn func() error) {
	u.steps = append(u.steps, undoStep{what, fn})
}

// Rollback runs the registered steps in reverse order. Failures are logged,
// not returned: the caller reports the error that made it roll back.
func (u *Undo) Rollback(log *slog.Logger) {
	for i := len(u.steps) - 1; i >= 0; i-- {
		s := u.steps[i]
		if err := s.fn(); err != nil {
			log.Error("undo failed; something may be left behind", "step", s.what, "err", err)
		}
	}
	u.steps = nil
}

// OnError rolls back when *errp is non-nil. Use with a named error result:
//
//	defer undo.OnError(&retErr, log)
func (u *Undo) OnError(errp *error, log *slog.Logger) {
	if *errp != nil {
		u.Rollback(log)
	}
}
