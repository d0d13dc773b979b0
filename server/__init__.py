"""The GraphQL server machinery: the /graphql endpoint, the request envelope, the
document gate, limits and cost, the mapping of errors to codes, the executor and
build_schema(...)."""
