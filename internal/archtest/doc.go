// Package archtest holds the module's import rule: which package may import
// which (Rooms, the may-import table the README shows), and a test that walks
// `go list` over the whole module and fails on any import the table does not
// allow, on any package the table does not name, and on gRPC or protobuf
// imported below the daemon.
//
// The table is the rule; to change what a package may import, change the
// table in the same commit and say why. It has no non-test code anyone
// should import besides Rooms and Check, which the README's layout table and
// the test share.
package archtest
