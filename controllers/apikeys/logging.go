package apikeys

import "github.com/go-logr/logr"

// MaxLogVerbosity is the highest verbosity the operator may log at.
//
// client-go logs every request and response body at V(8) and above, through
// the logger in the request's context: the controller's, and the manager's
// for its informers. Delivery Secret bodies hold plaintext keys (protobuf,
// logged as a hex dump, so a plain grep for the key misses them). Nothing
// the operator itself logs is above V(1), and client-go's V(6) and V(7)
// (URLs, latencies, headers with credentials masked) stay available.
const MaxLogVerbosity = 7

// SafeLogger returns l with every verbosity above MaxLogVerbosity disabled,
// whatever the log level flags say. The operator's root logger goes through
// it, so that no debug setting can log a delivery Secret.
func SafeLogger(l logr.Logger) logr.Logger {
	if l.GetSink() == nil {
		return l
	}
	return l.WithSink(cappedSink{LogSink: l.GetSink(), max: MaxLogVerbosity})
}

// cappedSink disables the levels above max of the sink it wraps.
type cappedSink struct {
	logr.LogSink
	max int
}

func (s cappedSink) Enabled(level int) bool { return level <= s.max && s.LogSink.Enabled(level) }

func (s cappedSink) Info(level int, msg string, kv ...any) {
	if level <= s.max {
		s.LogSink.Info(level, msg, kv...)
	}
}

func (s cappedSink) WithValues(kv ...any) logr.LogSink {
	return cappedSink{LogSink: s.LogSink.WithValues(kv...), max: s.max}
}

func (s cappedSink) WithName(name string) logr.LogSink {
	return cappedSink{LogSink: s.LogSink.WithName(name), max: s.max}
}

// WithCallDepth keeps caller information right when the wrapped sink
// reports it.
func (s cappedSink) WithCallDepth(depth int) logr.LogSink {
	if cd, ok := s.LogSink.(logr.CallDepthLogSink); ok {
		return cappedSink{LogSink: cd.WithCallDepth(depth), max: s.max}
	}
	return s
}
