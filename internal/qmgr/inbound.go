package qmgr

import (
	"bytes"
	"strings"

	"github.com/sluicemta/sluice/internal/config"
)

// InboundRouting decides, at acceptance, which virtual MTA or pool a
// message goes through and its job id, and removes the control headers
// from its content. Call it from the daemon's queue adapter before the
// spool Submit; src is cfg.Source(client IP, auth user).
//
//   - x-virtual-mta: NAME is honoured when the source has
//     process-x-virtual-mta yes and NAME is a configured virtual MTA or
//     pool; x-job: ID when it has process-x-job yes. Both headers are
//     removed either way (they are instructions to sluice, not to the
//     receiver, and must not leak a customer's routing).
//   - else the SMTP user's default-virtual-mta, else the source's;
//   - "" means the pool named default at delivery, if there is one.
//
// out is content itself when nothing was removed.
func InboundRouting(cfg *config.Config, src *config.Block, authUser string, content []byte) (vmtaName, jobID string, out []byte) {
	hdr := headerSection(content)
	xv, hasV := headerValue(hdr, "x-virtual-mta")
	xj, hasJ := headerValue(hdr, "x-job")
	out = content
	if hasV || hasJ {
		out = removeHeaders(content, len(hdr), "x-virtual-mta", "x-job")
	}
	if hasV && src.Bool("process-x-virtual-mta") && cfg.VMTA(xv) != nil {
		vmtaName = xv
	}
	if vmtaName == "" && authUser != "" {
		if u := cfg.SMTPUser(authUser); u != nil {
			vmtaName = u.String("default-virtual-mta")
		}
	}
	if vmtaName == "" {
		vmtaName = src.String("default-virtual-mta")
	}
	if hasJ && src.Bool("process-x-job") {
		jobID = xj
	}
	return vmtaName, jobID, out
}

// removeHeaders returns a copy of content without the fields named (and
// their continuation lines) in its first hdrLen bytes.
func removeHeaders(content []byte, hdrLen int, names ...string) []byte {
	out := make([]byte, 0, len(content))
	rest := content[:hdrLen]
	skipping := false
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		var line []byte
		if i < 0 {
			line, rest = rest, nil
		} else {
			line, rest = rest[:i+1], rest[i+1:]
		}
		if line[0] == ' ' || line[0] == '\t' {
			if !skipping {
				out = append(out, line...)
			}
			continue
		}
		skipping = false
		if c := bytes.IndexByte(line, ':'); c > 0 {
			name := strings.TrimRight(string(line[:c]), " \t")
			for _, n := range names {
				if strings.EqualFold(name, n) {
					skipping = true
				}
			}
		}
		if !skipping {
			out = append(out, line...)
		}
	}
	return append(out, content[hdrLen:]...)
}
