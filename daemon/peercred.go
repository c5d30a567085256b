package daemon

import (
	"context"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// PeerCred is the identity of the process at the other end of a Unix
// socket, as the kernel reports it (SO_PEERCRED) when the connection is made.
type PeerCred struct {
	PID int32
	UID uint32
	GID uint32
}

// unixAuthInfo is the AuthInfo of a connection on the Unix socket. Local
// connections need no encryption, so it reports privacy and integrity,
// which lets clients send bearer tokens over it.
type unixAuthInfo struct {
	credentials.CommonAuthInfo
	cred   PeerCred
	ok     bool        // cred was read
	budget *connBudget // this connection's inline puts in flight (server side)
}

func (unixAuthInfo) AuthType() string { return "unix" }

// unixCreds are the server-side transport credentials of the Unix socket
// listener: no handshake, only a read of the peer's credentials.
type unixCreds struct{}

func (unixCreds) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, unixAuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (unixCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info := unixAuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, budget: new(connBudget)}
	if uc, ok := c.(*net.UnixConn); ok {
		if cred, err := peerCred(uc); err == nil {
			info.cred, info.ok = cred, true
		}
	}
	return c, info, nil
}

func (unixCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "local"}
}
func (unixCreds) Clone() credentials.TransportCredentials { return unixCreds{} }
func (unixCreds) OverrideServerName(string) error         { return nil }

// peerCredOf returns the Unix peer credentials of a call, if it came over
// the Unix socket.
func peerCredOf(ctx context.Context) (PeerCred, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return PeerCred{}, false
	}
	info, ok := p.AuthInfo.(unixAuthInfo)
	if !ok || !info.ok {
		return PeerCred{}, false
	}
	return info.cred, true
}
