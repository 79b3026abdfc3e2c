package rest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/store"
)

// DefaultTokenTTL is the lifetime of a token created without a ttl.
const DefaultTokenTTL = 24 * time.Hour

// DefaultMaxTokenTTL caps the life of a token when Config.MaxTokenTTL is 0.
const DefaultMaxTokenTTL = 30 * 24 * time.Hour

func (a *Adapter) maxTokenTTL() time.Duration {
	if a.cfg.MaxTokenTTL > 0 {
		return a.cfg.MaxTokenTTL
	}
	return DefaultMaxTokenTTL
}

// maxUserName is the longest user name.
const maxUserName = 128

// validUserName reports whether name is 1..128 ASCII letters, digits, '.',
// '_', '@' or '-', starting with a letter or digit: usable as an MQTT
// username, a SASL name, a basic auth name (no ':') and in "%u" ACL
// filters (no '/', '+', '#'). It was the expression
// `^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$` (FuzzValidUserName holds it to
// that), whose compiled 128 copies of the repetition made this package's
// initialisation allocate 124 KB in 1,733 allocations in every hub.
func validUserName(name string) bool {
	if name == "" || len(name) > maxUserName || !isAlnum(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '.' && c != '_' && c != '@' && c != '-' {
			return false
		}
	}
	return true
}

// isAlnum reports whether c is an ASCII letter or digit.
func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

var roles = []string{adapters.RoleAdmin, adapters.RoleUser, adapters.RoleDevice}

// userRequest is the body of POST /api/v1/users.
type userRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	Role     string `json:"role"`
}

func (a *Adapter) listUsers(c *gin.Context) {
	pg, err := parsePage(c)
	if err != nil {
		a.fail(c, err)
		return
	}
	us, err := a.cfg.Store.ListUsers(c.Request.Context())
	if err != nil {
		a.fail(c, err)
		return
	}
	if us == nil {
		us = []store.User{}
	}
	c.JSON(http.StatusOK, paginate(c, pg, us, func(u store.User) string { return u.Name }))
}

func (a *Adapter) addUser(c *gin.Context) {
	var req userRequest
	if err := decodeJSON(c.Request.Body, &req); err != nil {
		a.fail(c, err)
		return
	}
	if !validUserName(req.Name) {
		a.fail(c, badRequest("name %q: must be 1..128 letters, digits, '.', '_', '@' or '-', starting with a letter or digit", trunc(req.Name)))
		return
	}
	if req.Password == "" {
		a.fail(c, badRequest("password: required"))
		return
	}
	if req.Role == "" {
		req.Role = adapters.RoleUser
	}
	if !slices.Contains(roles, req.Role) {
		a.fail(c, badRequest("role %q: must be one of %v", trunc(req.Role), roles))
		return
	}
	ctx := c.Request.Context()
	if err := a.cfg.Store.AddUser(ctx, req.Name, req.Password, req.Role); err != nil {
		a.fail(c, fmt.Errorf("rest: add user %q: %w", req.Name, err))
		return
	}
	u, err := a.cfg.Store.GetUser(ctx, req.Name)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.Header("Location", "/api/v1/users/"+u.Name)
	c.JSON(http.StatusCreated, u)
}

// userPatch is the body of PATCH /api/v1/users/{name}: what to change.
type userPatch struct {
	Role     string `json:"role"`
	Password string `json:"password"`
}

// patchUser handles PATCH /api/v1/users/{name}: a new role or password,
// in effect at once in every protocol (the decision caches are dropped;
// open subscriptions are checked again on their next delivery).
func (a *Adapter) patchUser(c *gin.Context) {
	ctx := c.Request.Context()
	name := c.Param("name")
	var req userPatch
	if err := decodeJSON(c.Request.Body, &req); err != nil {
		a.fail(c, err)
		return
	}
	if req.Role == "" && req.Password == "" {
		a.fail(c, badRequest("give role or password"))
		return
	}
	if req.Role != "" {
		if err := a.cfg.Store.SetRole(ctx, name, req.Role); err != nil {
			a.fail(c, fmt.Errorf("rest: user %q: %w", trunc(name), err))
			return
		}
	}
	if req.Password != "" {
		if err := a.cfg.Store.SetPassword(ctx, name, req.Password); err != nil {
			a.fail(c, fmt.Errorf("rest: user %q: %w", trunc(name), err))
			return
		}
	}
	a.cfg.Auth.Forget(name)
	u, err := a.cfg.Store.GetUser(ctx, name)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, u)
}

func (a *Adapter) deleteUser(c *gin.Context) {
	name := c.Param("name")
	if err := a.cfg.Store.DeleteUser(c.Request.Context(), name); err != nil {
		a.fail(c, fmt.Errorf("rest: delete user %q: %w", trunc(name), err))
		return
	}
	a.cfg.Auth.Forget(name)
	a.revoke(c.Request.Context(), name)
	c.Status(http.StatusNoContent)
}

// aclRuleJSON is an ACL rule as GET and PUT /api/v1/users/{name}/acl show
// it: the configuration file's rules first (consulted first, and
// read-only: a PUT leaves them out of what it stores, so what a GET
// returned can be sent back), then the stored ones.
type aclRuleJSON struct {
	adapters.ACLRule
	// ReadOnly marks a rule of the configuration file.
	ReadOnly bool `json:"read_only,omitempty"`
}

func (a *Adapter) getACL(c *gin.Context) {
	ctx := c.Request.Context()
	name := c.Param("name")
	if _, err := a.cfg.Store.GetUser(ctx, name); err != nil {
		a.fail(c, fmt.Errorf("rest: user %q: %w", trunc(name), err))
		return
	}
	stored, err := a.cfg.Store.ACL(ctx, name)
	if err != nil {
		a.fail(c, err)
		return
	}
	out := []aclRuleJSON{}
	for _, r := range a.cfg.Auth.ConfiguredRules(name) {
		out = append(out, aclRuleJSON{ACLRule: r, ReadOnly: true})
	}
	for _, r := range stored {
		out = append(out, aclRuleJSON{ACLRule: r})
	}
	c.JSON(http.StatusOK, out)
}

// putACL replaces the stored rules of a user and answers as getACL.
func (a *Adapter) putACL(c *gin.Context) {
	var in []aclRuleJSON
	if err := decodeJSON(c.Request.Body, &in); err != nil {
		a.fail(c, err)
		return
	}
	rules := []adapters.ACLRule{}
	for i, r := range in {
		if r.ReadOnly {
			continue
		}
		if err := adapters.ValidateRule(r.ACLRule); err != nil {
			a.fail(c, badRequest("rule %d: %v", i, err))
			return
		}
		rules = append(rules, r.ACLRule)
	}
	ctx := c.Request.Context()
	name := c.Param("name")
	if _, err := a.cfg.Store.GetUser(ctx, name); err != nil {
		a.fail(c, fmt.Errorf("rest: user %q: %w", trunc(name), err))
		return
	}
	if err := a.cfg.Store.SetACL(ctx, name, rules); err != nil {
		a.fail(c, err)
		return
	}
	a.cfg.Auth.Forget(name)
	a.getACL(c)
}

// tokenRequest is the (optional) body of POST /api/v1/tokens.
type tokenRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	// TTL is a Go duration ("1h"), at most the listener's MaxTokenTTL
	// (longer ones and "0s" get that); empty is DefaultTokenTTL.
	TTL string `json:"ttl"`
}

// tokenResponse is the body of a created token.
type tokenResponse struct {
	Token   string     `json:"token"`
	User    string     `json:"user"`
	Expires *time.Time `json:"expires"`
}

// createToken handles POST /api/v1/tokens: name and password in the body,
// or basic auth, with an optional ttl; an admin's bearer token mints one
// for the admin or for the user the body names.
func (a *Adapter) createToken(c *gin.Context) {
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		a.fail(c, fmt.Errorf("rest: read body: %w", err))
		return
	}
	var req tokenRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeJSON(bytes.NewReader(body), &req); err != nil {
			a.fail(c, err)
			return
		}
	}
	ttl := DefaultTokenTTL
	if req.TTL != "" {
		ttl, err = time.ParseDuration(req.TTL)
		if err != nil || ttl < 0 {
			a.fail(c, badRequest("ttl %q: must be a duration such as 1h, or 0s for the longest allowed", trunc(req.TTL)))
			return
		}
	}
	if maxTTL := a.maxTokenTTL(); ttl == 0 || ttl > maxTTL {
		ttl = maxTTL
	}
	ctx := c.Request.Context()
	var p adapters.Principal
	switch {
	case req.Name != "" && req.Password != "":
		if err = a.checkTLS(c); err == nil {
			p, err = a.cfg.Auth.Authenticate(a.loginCtx(c), req.Name, req.Password, adapters.AnonymousRefused)
		}
	case bearerToken(c) != "":
		// A stolen token must not mint itself a longer life: only an
		// admin's token mints, for the admin or for a named user.
		p, err = a.credentials(c)
		if err == nil && p.Role != adapters.RoleAdmin {
			err = fmt.Errorf("%w: a token is minted with the password (name and password, or basic auth), or by an admin", adapters.ErrForbidden)
		}
		if err == nil && req.Name != "" && req.Name != p.Name {
			var u store.User
			if u, err = a.cfg.Store.GetUser(ctx, req.Name); err == nil {
				p = adapters.Principal{Name: u.Name, Role: u.Role}
			} else if errors.Is(err, store.ErrNotFound) {
				err = fmt.Errorf("%w: no user %q", errNotFound, req.Name)
			}
		}
	case req.Name != "":
		err = fmt.Errorf("%w: give the password of %q, or an admin's token", adapters.ErrBadCredentials, req.Name)
	default:
		p, err = a.credentials(c)
	}
	if err != nil {
		a.fail(c, err)
		return
	}
	if p.Anonymous || p.Name == "" {
		a.fail(c, badRequest("a token belongs to a user: give name and password in the body, or basic auth"))
		return
	}
	tok, err := a.cfg.Store.CreateToken(ctx, p.Name, ttl)
	if err != nil {
		a.fail(c, fmt.Errorf("rest: create token for %q: %w", p.Name, err))
		return
	}
	exp := time.Now().Add(ttl).UTC()
	resp := tokenResponse{Token: tok, User: p.Name, Expires: &exp}
	c.JSON(http.StatusCreated, resp)
}

// deleteToken handles DELETE /api/v1/tokens/{token}: its owner or an admin
// revokes it.
func (a *Adapter) deleteToken(c *gin.Context) {
	ctx := c.Request.Context()
	tok := c.Param("token")
	u, err := a.cfg.Store.VerifyToken(ctx, tok)
	if err != nil {
		if errors.Is(err, adapters.ErrBadCredentials) {
			err = fmt.Errorf("%w: unknown or expired token", errNotFound)
		}
		a.fail(c, err)
		return
	}
	p := principal(c)
	if !isAdmin(p) && p.Name != u.Name {
		a.fail(c, fmt.Errorf("%w: the token belongs to another user", adapters.ErrForbidden))
		return
	}
	if err := a.cfg.Store.DeleteToken(ctx, tok); err != nil {
		a.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
