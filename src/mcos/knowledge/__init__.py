"""Document search over an agent's knowledge folders: conversion, chunks, BM25 and embeddings."""
