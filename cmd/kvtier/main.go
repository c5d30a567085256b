// Command kvtier runs the KV-cache tier daemon, its client commands and its
// built-in benchmarks. This package parses flags and wires packages together;
// it holds no logic of its own.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
)

// A command is one subcommand. run returns the process exit code:
// 0 success, 1 failure reported by the operation, 2 usage error.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

// commandSet is a table of subcommands with its usage text and dispatch:
// kvtier's commands, and the benchmarks of `kvtier bench`.
type commandSet struct {
	prog string // "kvtier", "kvtier bench"
	noun string // what an entry is called: "command", "benchmark"
	cmds map[string]command
}

// add registers a subcommand; each file adds its own from init.
func (cs *commandSet) add(name, summary string, run func(args []string, stdout, stderr io.Writer) int) {
	if _, dup := cs.cmds[name]; dup {
		panic(cs.prog + ": " + cs.noun + " registered twice: " + name)
	}
	if cs.cmds == nil {
		cs.cmds = map[string]command{}
	}
	cs.cmds[name] = command{summary: summary, run: run}
}

func (cs *commandSet) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s <%s> [flags]\n\n%ss:\n", cs.prog, cs.noun, cs.noun)
	names := make([]string, 0, len(cs.cmds))
	for n := range cs.cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cs.cmds[n].summary)
	}
	fmt.Fprintf(w, "\nRun '%s <%s> -h' for its flags.\n", cs.prog, cs.noun)
}

// run dispatches args[0] to its subcommand.
func (cs *commandSet) run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		cs.usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		cs.usage(stdout)
		return 0
	}
	c, ok := cs.cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "%s: unknown %s %q\n", cs.prog, cs.noun, args[0])
		cs.usage(stderr)
		return 2
	}
	return c.run(args[1:], stdout, stderr)
}

// commands is filled by register calls in each subcommand's file.
var commands = commandSet{prog: "kvtier", noun: "command"}

func register(name, summary string, run func(args []string, stdout, stderr io.Writer) int) {
	commands.add(name, summary, run)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int { return commands.run(args, stdout, stderr) }
