package main

import (
	"errors"
	"flag"
	"io"

	"github.com/kvtier/kvtier/daemon"
)

// flagAliases maps a flag's long name to its one-letter shorthand. Both are
// registered on the same variable; usage shows them as "-o, --out" and
// only the long name has an environment variable.
var flagAliases = map[string]string{"out": "o"}

// isShorthand reports whether name is the shorthand of another flag.
func isShorthand(name string) bool {
	for _, s := range flagAliases {
		if s == name {
			return true
		}
	}
	return false
}

// parseArgs parses args with fs. On -h it prints the usage once, to
// stdout, and returns 0, false; on a bad flag the flag package's message
// and the usage go to fs's output and it returns 2, false.
func parseArgs(fs *flag.FlagSet, args []string, stdout io.Writer) (int, bool) {
	usage := fs.Usage
	fs.Usage = func() {} // the flag package would print it on -h too
	err := fs.Parse(args)
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		out := fs.Output()
		fs.SetOutput(stdout)
		fs.Usage()
		fs.SetOutput(out)
		return 0, false
	case err != nil:
		fs.Usage()
		return 2, false
	}
	return 0, true
}

// errHostConfig: the configuration asks for something this host cannot
// give (an HBM tier without a GPU). Like daemon.ErrConfig, it exits 2.
var errHostConfig = errors.New("kvtier serve: invalid configuration")

// isConfigError reports whether err is a configuration error: exit 2.
func isConfigError(err error) bool {
	return errors.Is(err, daemon.ErrConfig) || errors.Is(err, errHostConfig)
}
