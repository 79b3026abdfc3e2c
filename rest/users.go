package rest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// DefaultTokenTTL is the lifetime of a token created without a ttl.
const DefaultTokenTTL = 24 * time.Hour

// userPattern keeps user names usable as MQTT usernames, SASL names, basic
// auth names (no ':') and in "%u" ACL filters (no '/', '+', '#').
var userPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)

var roles = []string{adapters.RoleAdmin, adapters.RoleUser, adapters.RoleDevice}

// userRequest is the body of POST /api/v1/users.
type userRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	Role     string `json:"role"`
}

func (a *Adapter) listUsers(c *gin.Context) {
	us, err := a.cfg.Store.ListUsers(c.Request.Context())
	if err != nil {
		a.fail(c, err)
		return
	}
	if us == nil {
		us = []store.User{}
	}
	c.JSON(http.StatusOK, us)
}

func (a *Adapter) addUser(c *gin.Context) {
	var req userRequest
	if err := decodeJSON(c.Request.Body, &req); err != nil {
		a.fail(c, err)
		return
	}
	if !userPattern.MatchString(req.Name) {
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

func (a *Adapter) deleteUser(c *gin.Context) {
	name := c.Param("name")
	if err := a.cfg.Store.DeleteUser(c.Request.Context(), name); err != nil {
		a.fail(c, fmt.Errorf("rest: delete user %q: %w", trunc(name), err))
		return
	}
	c.Status(http.StatusNoContent)
}

func (a *Adapter) getACL(c *gin.Context) {
	ctx := c.Request.Context()
	name := c.Param("name")
	if _, err := a.cfg.Store.GetUser(ctx, name); err != nil {
		a.fail(c, fmt.Errorf("rest: user %q: %w", trunc(name), err))
		return
	}
	rules, err := a.cfg.Store.ACL(ctx, name)
	if err != nil {
		a.fail(c, err)
		return
	}
	if rules == nil {
		rules = []adapters.ACLRule{}
	}
	c.JSON(http.StatusOK, rules)
}

// ValidateRule checks one ACL rule: its action and its filter (with "%u"
// standing for a user name).
func ValidateRule(r adapters.ACLRule) error {
	switch r.Action {
	case string(adapters.ActionPublish), string(adapters.ActionSubscribe), "all":
	default:
		return fmt.Errorf("action %q: must be publish, subscribe or all", trunc(r.Action))
	}
	if err := broker.ValidateFilter(strings.ReplaceAll(r.Filter, "%u", "u")); err != nil {
		return fmt.Errorf("filter: %w", err)
	}
	return nil
}

func (a *Adapter) putACL(c *gin.Context) {
	var rules []adapters.ACLRule
	if err := decodeJSON(c.Request.Body, &rules); err != nil {
		a.fail(c, err)
		return
	}
	for i, r := range rules {
		if err := ValidateRule(r); err != nil {
			a.fail(c, badRequest("rule %d: %v", i, err))
			return
		}
	}
	ctx := c.Request.Context()
	name := c.Param("name")
	if _, err := a.cfg.Store.GetUser(ctx, name); err != nil {
		a.fail(c, fmt.Errorf("rest: user %q: %w", trunc(name), err))
		return
	}
	if rules == nil {
		rules = []adapters.ACLRule{}
	}
	if err := a.cfg.Store.SetACL(ctx, name, rules); err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, rules)
}

// tokenRequest is the (optional) body of POST /api/v1/tokens.
type tokenRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	// TTL is a Go duration ("1h"); "0s" never expires; empty is
	// DefaultTokenTTL.
	TTL string `json:"ttl"`
}

// tokenResponse is the body of a created token.
type tokenResponse struct {
	Token   string     `json:"token"`
	User    string     `json:"user"`
	Expires *time.Time `json:"expires"`
}

// createToken handles POST /api/v1/tokens: credentials in the body, or
// basic auth (or a bearer token, to renew) with an optional body holding
// only ttl.
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
			a.fail(c, badRequest("ttl %q: must be a duration such as 1h, or 0s for no expiry", trunc(req.TTL)))
			return
		}
	}
	ctx := c.Request.Context()
	var p adapters.Principal
	if req.Name != "" {
		p, err = a.cfg.Auth.Authenticate(ctx, req.Name, req.Password, false)
	} else {
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
	resp := tokenResponse{Token: tok, User: p.Name}
	if ttl > 0 {
		exp := time.Now().Add(ttl).UTC()
		resp.Expires = &exp
	}
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
