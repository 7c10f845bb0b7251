package subnetd

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// TestFailedSubscribeLeavesNoGoroutine: a subscribe that fails (here
// before any socket, the namespace file not being one) leaves no goroutine
// behind; run retries it every second for as long as it fails.
func TestFailedSubscribeLeavesNoGoroutine(t *testing.T) {
	notNS, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer notNS.Close()
	w := &linkWatch{ns: notNS}
	before := runtime.NumGoroutine()
	for range 20 {
		if _, err := w.subscribe(); err == nil {
			t.Fatal("subscribing in /dev/null succeeded")
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after 20 failed subscribes, %d before", n, before)
	}
}
