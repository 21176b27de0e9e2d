// Package console is the web console a node serves under /console/ for
// department officers, coordinators and operators: local accounts with
// argon2id passwords, sessions, CSRF protection, and server-rendered
// pages that call the node's own API in process, as the account's
// identity, so that every page admits exactly whom the API admits.
// DESIGN.md beside this file explains the choices.
package console
