package nvme

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestBadgerLogger(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	tests := []struct {
		name  string
		level slog.Level
		log   func(badgerLogger)
		want  string // "" when nothing may be written
	}{
		{"error passes", slog.LevelWarn, func(l badgerLogger) { l.Errorf("disk %s\n", "gone") }, `level=ERROR msg="disk gone" component=badger`},
		{"warning passes", slog.LevelWarn, func(l badgerLogger) { l.Warningf("slow %d", 3) }, `level=WARN msg="slow 3"`},
		{"info dropped at warn", slog.LevelWarn, func(l badgerLogger) { l.Infof("flushed") }, ""},
		{"debug dropped at warn", slog.LevelWarn, func(l badgerLogger) { l.Debugf("x") }, ""},
		{"info passes at info", slog.LevelInfo, func(l badgerLogger) { l.Infof("flushed") }, `level=INFO msg=flushed`},
		{"nil logger", slog.LevelDebug, func(l badgerLogger) { l.l = nil; l.Errorf("x") }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf.Reset()
			tc.log(badgerLogger{l: slog.New(h), level: tc.level})
			got := buf.String()
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Fatalf("logged %q, want %q", got, tc.want)
			}
		})
	}
}
