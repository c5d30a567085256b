package nvme

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// badgerLogger routes Badger's printf-style log calls to log/slog, dropping
// records below level (Warn by default: Badger logs every flush, compaction
// and GC pass at Info).
type badgerLogger struct {
	l     *slog.Logger
	level slog.Level
}

func (b badgerLogger) Errorf(f string, args ...any)   { b.log(slog.LevelError, f, args) }
func (b badgerLogger) Warningf(f string, args ...any) { b.log(slog.LevelWarn, f, args) }
func (b badgerLogger) Infof(f string, args ...any)    { b.log(slog.LevelInfo, f, args) }
func (b badgerLogger) Debugf(f string, args ...any)   { b.log(slog.LevelDebug, f, args) }

func (b badgerLogger) log(level slog.Level, f string, args []any) {
	if level < b.level || b.l == nil {
		return
	}
	ctx := context.Background()
	if !b.l.Enabled(ctx, level) {
		return
	}
	b.l.Log(ctx, level, strings.TrimSpace(fmt.Sprintf(f, args...)), "component", "badger")
}
