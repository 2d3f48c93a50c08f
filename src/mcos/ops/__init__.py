"""Operations: diagnosis of a whole installation (`mcos doctor`)."""
