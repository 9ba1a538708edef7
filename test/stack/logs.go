package stack

import (
	"fmt"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// LogBuffer collects every log line of a run in memory, for tests that
// scan the operator's and the sidecar's logs (for secrets, for events).
type LogBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

// Logger returns a logger named name that writes into the buffer, up to
// V(7) (the operator caps itself below client-go's body logging anyway).
func (l *LogBuffer) Logger(name string) logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		fmt.Fprintf(&l.buf, "%s %s\n", prefix, args)
	}, funcr.Options{Verbosity: 7}).WithName(name)
}

// String returns everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
