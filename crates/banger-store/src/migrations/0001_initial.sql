CREATE TABLE kernels (
    name       TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL,
    release    TEXT NOT NULL,
    source     TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE images (
    name       TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    source     TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE vms (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    state       TEXT NOT NULL,
    image_name  TEXT NOT NULL REFERENCES images(name) ON DELETE RESTRICT,
    kernel_name TEXT NOT NULL REFERENCES kernels(name) ON DELETE RESTRICT,
    backend     TEXT NOT NULL,
    spec        TEXT NOT NULL,
    runtime     TEXT,
    last_error  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
