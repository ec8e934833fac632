package qmgr

import (
	"bytes"
	"net/url"
	"strings"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/spool"
)

// prepare returns the content to send for one transaction: sluice's own
// per-queue headers (RFC 8058 List-Unsubscribe, List-Unsubscribe-Post)
// added first, then the Sign hook (DKIM), so a signature covers them. It
// returns content itself, uncopied, when there is nothing to change.
func (m *Manager) prepare(cfg *config.Config, key spool.QueueKey, dom *config.Block, env *spool.Message, group []spool.Due, content []byte) ([]byte, error) {
	var rcpt string
	if len(group) == 1 {
		rcpt = env.Recipients[group[0].Rcpt].Addr
	}
	out := addUnsubscribe(content, dom.String("list-unsubscribe"), dom.Bool("add-list-unsubscribe-post"), unsubVars{
		rcpt: rcpt, from: env.Sender, job: env.JobID, envid: env.EnvID, id: env.ID,
	})
	if m.opt.Sign != nil {
		return m.opt.Sign(cfg, key, out)
	}
	return out, nil
}

type unsubVars struct{ rcpt, from, job, envid, id string }

// addUnsubscribe adds List-Unsubscribe: <URL> from template where the
// message has none, and List-Unsubscribe-Post: List-Unsubscribe=One-Click
// when post is set, the message has none and its List-Unsubscribe (added
// or its own) holds an https URI (RFC 8058 3.1 requires one).
func addUnsubscribe(content []byte, template string, post bool, v unsubVars) []byte {
	if template == "" && !post {
		return content
	}
	hdr := headerSection(content)
	lu, hasLU := headerValue(hdr, "List-Unsubscribe")
	_, hasPost := headerValue(hdr, "List-Unsubscribe-Post")
	var add []byte
	if !hasLU && template != "" {
		u := expandTemplate(template, v)
		add = append(add, "List-Unsubscribe: <"+u+">\r\n"...)
		lu, hasLU = "<"+u+">", true
	}
	if post && hasLU && !hasPost && hasHTTPSURI(lu) {
		add = append(add, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"...)
	}
	if len(add) == 0 {
		return content
	}
	out := make([]byte, 0, len(add)+len(content))
	out = append(out, add...)
	return append(out, content...)
}

func expandTemplate(t string, v unsubVars) string {
	r := strings.NewReplacer("{rcpt}", url.QueryEscape(v.rcpt), "{from}", url.QueryEscape(v.from),
		"{jobid}", url.QueryEscape(v.job), "{envid}", url.QueryEscape(v.envid), "{id}", url.QueryEscape(v.id))
	return r.Replace(t)
}

// hasHTTPSURI reports whether a List-Unsubscribe value holds an <https:...> URI.
func hasHTTPSURI(v string) bool {
	for {
		i := strings.IndexByte(v, '<')
		if i < 0 {
			return false
		}
		v = v[i+1:]
		j := strings.IndexByte(v, '>')
		if j < 0 {
			return false
		}
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(v[:j])), "https:") {
			return true
		}
		v = v[j+1:]
	}
}

// headerSection returns the header of a message, up to and including the
// line end before the empty line (all of it when there is no body).
func headerSection(content []byte) []byte {
	if bytes.HasPrefix(content, []byte("\r\n")) || bytes.HasPrefix(content, []byte("\n")) {
		return nil
	}
	if i := bytes.Index(content, []byte("\n\r\n")); i >= 0 {
		if j := bytes.Index(content, []byte("\n\n")); j >= 0 && j < i {
			return content[:j+1]
		}
		return content[:i+1]
	}
	if j := bytes.Index(content, []byte("\n\n")); j >= 0 {
		return content[:j+1]
	}
	return content
}

// headerValue returns the unfolded value of the first field called name.
func headerValue(hdr []byte, name string) (string, bool) {
	for len(hdr) > 0 {
		line, rest := cutLine(hdr)
		hdr = rest
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if !strings.EqualFold(strings.TrimRight(string(line[:colon]), " \t"), name) {
			continue
		}
		v := string(bytes.TrimSpace(line[colon+1:]))
		for len(hdr) > 0 && (hdr[0] == ' ' || hdr[0] == '\t') {
			var cont []byte
			cont, hdr = cutLine(hdr)
			v += " " + string(bytes.TrimSpace(cont))
		}
		return v, true
	}
	return "", false
}

func cutLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	return bytes.TrimRight(b[:i], "\r"), b[i+1:]
}
