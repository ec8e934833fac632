// Package dkimkey reads DKIM private keys and formats their public DNS
// records. It has no other dependency so that internal/config can load the
// keys named by domain-key when the configuration loads (a missing or bad
// key is then a config error, not an unsigned message later).
package dkimkey

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Algorithms, as written in a DKIM-Signature a= tag.
const (
	RSASHA256     = "rsa-sha256"
	Ed25519SHA256 = "ed25519-sha256"
)

// MinRSABits is the smallest RSA key accepted: RFC 8301 forbids signing
// with less than 1024 bits.
const MinRSABits = 1024

// Parse reads a private key: PEM "RSA PRIVATE KEY" (PKCS #1, as
// opendkim-genkey writes), PEM "PRIVATE KEY" (PKCS #8, RSA or Ed25519, as
// `openssl genpkey` writes), or the base64 Ed25519 seed dkimpy's dknewkey
// writes. Encrypted keys are refused: the daemon has nobody to ask for a
// passphrase.
func Parse(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return parseRawEd25519(data)
	}
	if _, ok := block.Headers["Proc-Type"]; ok || strings.Contains(block.Type, "ENCRYPTED") {
		return nil, errors.New("encrypted private keys are not supported")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not an RSA or Ed25519 private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if n := k.N.BitLen(); n < MinRSABits {
			return nil, fmt.Errorf("RSA key has %d bits; DKIM needs at least %d (2048 recommended)", n, MinRSABits)
		}
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("RSA key: %w", err)
		}
		k.Precompute()
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("%T keys are not used by DKIM (want RSA or Ed25519)", key)
}

func parseRawEd25519(data []byte) (crypto.Signer, error) {
	s := strings.TrimSpace(string(data))
	if s == "" {
		return nil, errors.New("empty key file")
	}
	seed, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, errors.New("no PEM private key, nor a base64 Ed25519 seed")
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// Algorithm returns the a= value for signatures made with s, or "" for a
// key type DKIM does not use.
func Algorithm(s crypto.Signer) string {
	switch s.Public().(type) {
	case *rsa.PublicKey:
		return RSASHA256
	case ed25519.PublicKey:
		return Ed25519SHA256
	}
	return ""
}

// Record returns the TXT record that publishes s's public key at
// SELECTOR._domainkey.DOMAIN: the SubjectPublicKeyInfo for RSA (what
// opendkim-genkey publishes), the raw 32 bytes for Ed25519 (RFC 8463).
func Record(s crypto.Signer) (string, error) {
	switch pub := s.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", fmt.Errorf("dkimkey: marshal RSA public key: %w", err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	}
	return "", fmt.Errorf("dkimkey: unsupported key type %T", s.Public())
}
